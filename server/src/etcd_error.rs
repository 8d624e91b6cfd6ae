//! The errors a client can meet, as etcd reports them: a gRPC code and etcd's exact text
//! (clients such as clientv3 and etcdctl match errors by their message).

use concord_proto::concordpb::ApplyError;
use tonic::{Code, Status};

/// One etcd error: the gRPC code and the message etcd sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdError {
    pub code: Code,
    pub message: String,
}

macro_rules! etcd_errors {
    ($($name:ident => $code:ident, $text:literal;)*) => {
        impl EtcdError {
            $(
                #[allow(non_snake_case)]
                pub fn $name() -> EtcdError {
                    EtcdError { code: Code::$code, message: $text.to_string() }
                }
            )*
        }
    };
}

etcd_errors! {
    empty_key => InvalidArgument, "etcdserver: key is not provided";
    key_not_found => InvalidArgument, "etcdserver: key not found";
    value_provided => InvalidArgument, "etcdserver: value is provided";
    lease_provided => InvalidArgument, "etcdserver: lease is provided";
    too_many_ops => InvalidArgument, "etcdserver: too many operations in txn request";
    duplicate_key => InvalidArgument, "etcdserver: duplicate key given in txn request";
    compacted => OutOfRange, "etcdserver: mvcc: required revision has been compacted";
    future_rev => OutOfRange, "etcdserver: mvcc: required revision is a future revision";
    no_space => ResourceExhausted, "etcdserver: mvcc: database space exceeded";
    lease_not_found => NotFound, "etcdserver: requested lease not found";
    lease_exist => FailedPrecondition, "etcdserver: lease already exists";
    lease_ttl_too_large => OutOfRange, "etcdserver: too large lease TTL";
    member_exist => FailedPrecondition, "etcdserver: member ID already exist";
    peer_url_exist => FailedPrecondition, "etcdserver: Peer URLs already exists";
    member_not_enough_started => FailedPrecondition, "etcdserver: re-configuration failed due to not enough started members";
    member_bad_urls => InvalidArgument, "etcdserver: given member URLs are invalid";
    member_not_found => NotFound, "etcdserver: member not found";
    member_not_learner => FailedPrecondition, "etcdserver: can only promote a learner member";
    learner_not_ready => FailedPrecondition, "etcdserver: can only promote a learner member which is in sync with leader";
    too_many_learners => FailedPrecondition, "etcdserver: too many learner members in cluster";
    request_too_large => InvalidArgument, "etcdserver: request is too large";
    too_many_requests => ResourceExhausted, "etcdserver: too many requests";
    invalid_sort_option => InvalidArgument, "etcdserver: invalid sort option";
    no_leader => Unavailable, "etcdserver: no leader";
    not_leader => FailedPrecondition, "etcdserver: not leader";
    leader_changed => Unavailable, "etcdserver: leader changed";
    not_capable => Unavailable, "etcdserver: not capable";
    stopped => Unavailable, "etcdserver: server stopped";
    timeout => Unavailable, "etcdserver: request timed out";
    timeout_due_to_leader_fail => Unavailable, "etcdserver: request timed out, possibly due to previous leader failure";
    timeout_due_to_connection_lost => Unavailable, "etcdserver: request timed out, possibly due to connection lost";
    unhealthy => Unavailable, "etcdserver: unhealthy cluster";
    corrupt => DataLoss, "etcdserver: corrupt cluster";
    not_supported_for_learner => Unavailable, "etcdserver: rpc not supported for learner";
    bad_leader_transferee => FailedPrecondition, "etcdserver: bad leader transferee";
    permission_denied => PermissionDenied, "etcdserver: permission denied";
    auth_not_enabled => FailedPrecondition, "etcdserver: authentication is not enabled";
    invalid_auth_token => Unauthenticated, "etcdserver: invalid auth token";
    auth_failed => InvalidArgument, "etcdserver: authentication failed, invalid user ID or password";
    root_user_not_exist => FailedPrecondition, "etcdserver: root user does not exist";
    root_role_not_exist => FailedPrecondition, "etcdserver: root user does not have root role";
    user_already_exist => FailedPrecondition, "etcdserver: user name already exists";
    user_empty => InvalidArgument, "etcdserver: user name is empty";
    user_not_found => FailedPrecondition, "etcdserver: user name not found";
    role_already_exist => FailedPrecondition, "etcdserver: role name already exists";
    role_not_found => FailedPrecondition, "etcdserver: role name not found";
    role_empty => InvalidArgument, "etcdserver: role name is empty";
    role_not_granted => FailedPrecondition, "etcdserver: role is not granted to the user";
    permission_not_granted => FailedPrecondition, "etcdserver: permission is not granted to the role";
    invalid_auth_mgmt => InvalidArgument, "etcdserver: invalid auth management";
    auth_old_revision => InvalidArgument, "etcdserver: revision of auth store is old";
    // auth.ErrNoPasswordUser has no gRPC twin: etcd sends its text with code Unknown.
    no_password_user => Unknown, "auth: authentication failed, password was given for no password user";
}

impl EtcdError {
    /// An internal failure that is not the client's doing.
    pub fn internal(message: impl Into<String>) -> EtcdError {
        EtcdError {
            code: Code::Internal,
            message: message.into(),
        }
    }

    /// grpc-go's text of this error as a status (`rpc error: code = X desc = Y`): what
    /// etcd puts where it prints a status error as a string (a watch's cancel reason).
    pub fn go_status_text(&self) -> String {
        format!("rpc error: code = {:?} desc = {}", self.code, self.message)
    }

    /// The same refusal as etcd's auth package words it, where etcd hands the
    /// package's error to gRPC unconverted (Maintenance's admin check): code Unknown,
    /// "auth: ..." text.
    pub fn as_auth_package_error(&self) -> EtcdError {
        let text = match self.message.as_str() {
            "etcdserver: permission denied" => "auth: permission denied",
            "etcdserver: user name is empty" => "auth: user name is empty",
            "etcdserver: user name not found" => "auth: user not found",
            "etcdserver: invalid auth token" => "auth: invalid auth token",
            _ => return self.clone(),
        };
        EtcdError {
            code: Code::Unknown,
            message: text.to_string(),
        }
    }

    pub fn to_status(&self) -> Status {
        Status::new(self.code, self.message.clone())
    }

    pub fn to_apply_error(&self) -> ApplyError {
        ApplyError {
            code: self.code as u32,
            message: self.message.clone(),
        }
    }

    pub fn from_apply_error(error: &ApplyError) -> EtcdError {
        EtcdError {
            code: Code::from(error.code as i32),
            message: error.message.clone(),
        }
    }
}

impl From<EtcdError> for Status {
    fn from(error: EtcdError) -> Status {
        error.to_status()
    }
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<&concord_mvcc::Error> for EtcdError {
    fn from(error: &concord_mvcc::Error) -> EtcdError {
        use concord_mvcc::Error as E;
        match error {
            E::Compacted => EtcdError::compacted(),
            E::FutureRevision => EtcdError::future_rev(),
            E::KeyNotFound => EtcdError::key_not_found(),
            E::EmptyKey => EtcdError::empty_key(),
            E::ValueProvided => EtcdError::value_provided(),
            E::LeaseProvided => EtcdError::lease_provided(),
            E::DuplicateKey => EtcdError::duplicate_key(),
            E::TooManyOps => EtcdError::too_many_ops(),
            E::InvalidSortOption => EtcdError::invalid_sort_option(),
            E::Stopped => EtcdError::stopped(),
            other => EtcdError::internal(other.to_string()),
        }
    }
}

impl From<concord_mvcc::Error> for EtcdError {
    fn from(error: concord_mvcc::Error) -> EtcdError {
        EtcdError::from(&error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mvcc_errors_take_etcds_grpc_form() {
        let compacted = EtcdError::from(concord_mvcc::Error::Compacted);
        assert_eq!(compacted.code, Code::OutOfRange);
        assert_eq!(
            compacted.message,
            "etcdserver: mvcc: required revision has been compacted"
        );
        let duplicate = EtcdError::from(concord_mvcc::Error::DuplicateKey);
        assert_eq!(duplicate.code, Code::InvalidArgument);
        assert_eq!(
            duplicate.message,
            "etcdserver: duplicate key given in txn request"
        );
    }

    #[test]
    fn apply_errors_round_trip() {
        let original = EtcdError::lease_not_found();
        assert_eq!(
            EtcdError::from_apply_error(&original.to_apply_error()),
            original
        );
    }
}
