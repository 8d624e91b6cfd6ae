//! The one error type of concordctl, carrying etcdctl's exit code.

/// etcdctl's exit codes (`ctlv3/command/error.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitCode {
    /// A request failed (server error, timeout).
    Error = 1,
    /// The client could not be built or connected.
    BadConnection = 2,
    /// Malformed interactive input (txn, watch).
    InvalidInput = 3,
    /// A valid flag with an unsupported value (e.g. an output format).
    BadFeature = 4,
    /// Interrupted by a signal.
    Interrupted = 5,
    /// Local I/O failed.
    Io = 6,
    /// Wrong arguments.
    BadArgs = 128,
}

/// A failed command: what etcdctl prints after `Error: ` and the exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct CtlError {
    pub code: ExitCode,
    pub message: String,
}

impl CtlError {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_args(message: impl Into<String>) -> Self {
        Self::new(ExitCode::BadArgs, message)
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ExitCode::InvalidInput, message)
    }

    pub fn bad_feature(message: impl Into<String>) -> Self {
        Self::new(ExitCode::BadFeature, message)
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Error, message)
    }

    /// Exit without printing anything more (the output already said it).
    pub fn silent(code: ExitCode) -> Self {
        Self::new(code, String::new())
    }
}

/// How clientv3 renders a gRPC status: etcd's own errors by their text, others
/// as `rpc error: code = X desc = Y`.
pub fn status_message(status: &tonic::Status) -> String {
    let msg = status.message();
    if msg.starts_with("etcdserver: ") || msg.starts_with("auth: ") || msg.starts_with("mvcc: ") {
        return msg.to_owned();
    }
    grpc_error_text(status)
}

/// grpc-go's text of a status error, `rpc error: code = X desc = Y`, whatever the
/// message (what clientv3's logs show).
pub fn grpc_error_text(status: &tonic::Status) -> String {
    format!(
        "rpc error: code = {} desc = {}",
        go_code_name(status.code()),
        status.message()
    )
}

fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_errors_print_their_text() {
        let s = tonic::Status::not_found("etcdserver: requested lease not found");
        assert_eq!(status_message(&s), "etcdserver: requested lease not found");
        let s = tonic::Status::unavailable("connection refused");
        assert_eq!(
            status_message(&s),
            "rpc error: code = Unavailable desc = connection refused"
        );
    }
}
