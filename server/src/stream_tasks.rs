//! One task per HTTP/2 connection: the futures hyper would spawn as tasks of their own
//! (a server's request streams; a client's connection, body pipes and response futures) run
//! inside the connection's task instead.
//!
//! Why: the raft driver completes a whole batch of writes at once. With a task per stream,
//! each completed request wakes its own task, whose response then wakes the connection
//! task, which the runtime runs at once (its LIFO slot) and which writes that one response:
//! a wake-up, a task switch and a `writev` per response. Here the batch's wake-ups all land
//! on one task, which polls every woken stream first and the connection after them, so the
//! responses a batch finished on one connection leave in one write. The peer transport's
//! client side gains the same way: a batch of raft messages wakes one task, which encodes
//! them and writes them, where it took three tasks handing over to each other.
//!
//! The streams of one connection share a thread while they run; handlers never block (they
//! await the raft driver and the store's readers), so this costs no parallelism the
//! connection's own HTTP/2 state, which is one task anyway, did not already cost.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::FutureExt as _;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use futures::task::{ArcWake, AtomicWaker, waker_ref};
use parking_lot::Mutex;
use tracing::debug;

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Rounds of (new streams, woken streams, connection) in one poll before the task yields
/// to the runtime: a client that keeps sending cannot hold a worker thread.
const MAX_ROUNDS_PER_POLL: usize = 16;

/// What the connection's task shares with hyper's executor handle and with the wakers it
/// gives the futures it polls.
#[derive(Default)]
struct Shared {
    /// Futures handed over by hyper, waiting to join the task.
    queue: Mutex<Vec<StreamFuture>>,
    /// The task's own waker.
    task: AtomicWaker,
    /// True while the task is inside its poll, which then looks at `woken` again before
    /// it returns: a wake-up needs no trip through the runtime.
    polling: AtomicBool,
    /// Something inside (a stream, the connection, a hand-over) asked to be polled.
    woken: AtomicBool,
}

impl Shared {
    fn signal(&self) {
        // SeqCst pairs with the stores in `Drive::poll`: either this load sees the poll
        // still running (which then sees `woken`), or the poll has ended and the task's
        // waker below reaches it.
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

impl ArcWake for Shared {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.signal();
    }
}

/// hyper's executor for one connection: what it is given joins that connection's task
/// (see [`drive`]) instead of becoming a task.
#[derive(Clone, Default)]
pub(crate) struct ConnectionExecutor {
    shared: Arc<Shared>,
}

impl<F> hyper::rt::Executor<F> for ConnectionExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        // A panic ends that stream only, as it would end a task of its own.
        let isolated = AssertUnwindSafe(future).catch_unwind().map(|_| ());
        self.shared.queue.lock().push(Box::pin(isolated));
        self.shared.signal();
    }
}

/// Polls `connection` and the futures it hands to `executor` in one task, until the
/// connection has ended and every one of them is done.
pub(crate) fn drive<C, O>(connection: C, executor: ConnectionExecutor) -> Drive<C, O>
where
    C: Future<Output = O>,
{
    Drive {
        connection: Box::pin(connection),
        streams: FuturesUnordered::new(),
        shared: executor.shared,
        ended: None,
    }
}

/// The future of [`drive`]. A named type with the output as a parameter of its own: the
/// compiler cannot prove `Send` for an `async fn` version (or for `C::Output` fields) once
/// it is awaited inside another future.
pub(crate) struct Drive<C, O> {
    connection: Pin<Box<C>>,
    streams: FuturesUnordered<StreamFuture>,
    shared: Arc<Shared>,
    ended: Option<O>,
}

impl<C, O> Unpin for Drive<C, O> {}

impl<C, O> Future for Drive<C, O>
where
    C: Future<Output = O>,
{
    type Output = O;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O> {
        let this = self.get_mut();
        let shared = this.shared.clone();
        shared.task.register(cx.waker());
        shared.polling.store(true, Ordering::SeqCst);
        // Everything inside is polled with a waker that only raises `woken` while this
        // poll runs: a stream waking the connection (or the reverse) is handled by the
        // loop below rather than by rescheduling the task, which on tokio's multi-thread
        // runtime would also wake an idle worker to come and steal it.
        let inner_waker = waker_ref(&shared);
        let mut inner = Context::from_waker(&inner_waker);
        let mut rounds = 0;
        loop {
            rounds += 1;
            shared.woken.store(false, Ordering::SeqCst);
            this.streams.extend(shared.queue.lock().drain(..));
            // Streams before the connection: what they answer goes out in this round's
            // write.
            while let Poll::Ready(Some(())) = this.streams.poll_next_unpin(&mut inner) {}
            if this.ended.is_none()
                && let Poll::Ready(output) = this.connection.as_mut().poll(&mut inner)
            {
                this.ended = Some(output);
                // The connection is gone (the client closed it, or it failed): what is
                // left of its streams can never send again. Dropping them now ends
                // their handlers and drops their response bodies, which is how a
                // stream's producer (a snapshot's sender, a watch) learns that its
                // client went away. Left in place they would wait for a wake-up
                // nothing is bound to deliver, holding what they hold (a snapshot's
                // read view) for good.
                let left = this.streams.len() + shared.queue.lock().len();
                if left > 0 {
                    debug!("connection ended with {left} streams unfinished; dropping them");
                }
                this.streams.clear();
                let queued = std::mem::take(&mut *shared.queue.lock());
                drop(queued);
            }
            if !shared.woken.load(Ordering::SeqCst) {
                shared.polling.store(false, Ordering::SeqCst);
                if !shared.woken.load(Ordering::SeqCst) {
                    break;
                }
                shared.polling.store(true, Ordering::SeqCst);
            }
            if rounds >= MAX_ROUNDS_PER_POLL {
                shared.polling.store(false, Ordering::SeqCst);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        if this.streams.is_empty()
            && let Some(output) = this.ended.take()
        {
            return Poll::Ready(output);
        }
        Poll::Pending
    }
}
