//! A connection's mailbox: how rooms, timers and the node reach a connection's task.
//!
//! Frames from rooms never wait: they are queued at once, and the bytes waiting are counted.
//! When a client stops reading, its task stops writing, the count rises, and past the
//! configured limit the mailbox raises its overflow signal, which the task obeys even while
//! it is stuck in a socket write: it closes the socket with [`SLOW_CONSUMER`] and the session
//! stays resumable (the room keeps its frames). Nobody else in the room slows down, and no
//! queue grows without bound.
//!
//! [`SLOW_CONSUMER`]: super::connection::close_code::SLOW_CONSUMER

use super::connection::ConnectionMsg;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use switchboard_actors::ports::Frame;
use tokio::sync::Notify;

/// The sending side of a connection's mailbox; cheap to clone.
#[derive(Clone)]
pub struct Mailbox {
    shared: Arc<Shared>,
}

/// The receiving side, held by the connection's task.
pub struct Inbox {
    shared: Arc<Shared>,
}

/// A queue under a lock and a wake-up, rather than a channel: an idle connection's mailbox
/// then holds no preallocated block of slots, only what is queued.
struct Shared {
    /// Messages not yet taken by the task.
    queue: Mutex<VecDeque<ConnectionMsg>>,
    /// Wakes the task when something is queued.
    arrived: Notify,
    /// The task has ended: nothing more is taken.
    closed: AtomicBool,
    /// Bytes of frames queued and not yet written to the socket.
    queued: AtomicUsize,
    /// The most bytes that may wait.
    limit: usize,
    /// Set once when `queued` went past `limit`.
    overflowed: AtomicBool,
    /// Wakes the task when the mailbox overflows.
    overflow: Notify,
    /// The task should stop after the message it is handling.
    stopping: AtomicBool,
    /// Receipts wake the task (see [`Mailbox::receipt`]).
    wake_on_receipt: AtomicBool,
}

/// Receipts that may wait unseen in the queue before one wakes the task anyway.
const QUIET_RECEIPTS: usize = 32;

impl Mailbox {
    /// A mailbox that lets at most `limit` bytes of frames wait, and its receiving side.
    pub fn channel(limit: usize) -> (Mailbox, Inbox) {
        let shared = Shared {
            queue: Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
            closed: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            limit,
            overflowed: AtomicBool::new(false),
            overflow: Notify::new(),
            stopping: AtomicBool::new(false),
            wake_on_receipt: AtomicBool::new(false),
        };
        let shared = Arc::new(shared);
        (Mailbox { shared: shared.clone() }, Inbox { shared })
    }

    /// Sends a control message (not counted against the limit). False when the task is gone.
    pub fn cast(&self, msg: ConnectionMsg) -> bool {
        self.shared.push(msg)
    }

    /// Queues a frame from a room. False when the task is gone; a frame past the limit is
    /// dropped (the connection is closing, and the room keeps it for the resume).
    pub fn deliver(&self, frame: Frame) -> bool {
        if self.shared.overflowed.load(Ordering::Relaxed) {
            return !self.shared.closed.load(Ordering::Relaxed);
        }
        let size = frame.body.len();
        let queued = self.shared.queued.fetch_add(size, Ordering::Relaxed) + size;
        if queued > self.shared.limit {
            self.shared.queued.fetch_sub(size, Ordering::Relaxed);
            if !self.shared.overflowed.swap(true, Ordering::Relaxed) {
                self.shared.overflow.notify_one();
            }
            return !self.shared.closed.load(Ordering::Relaxed);
        }
        self.shared.push(ConnectionMsg::Deliver(frame))
    }

    /// Queues a receipt for one of this connection's relayed messages (`id`, JSON text). It
    /// wakes the task only when the task asked for that ([`wake_on_receipts`]): most receipts
    /// change nothing the client sees, so they wait for the task's next turn (its client's next
    /// message, or its retry timer within a second), which saves a wake-up per relayed message.
    /// A backlog of more than a few wakes it anyway. False when the task is gone.
    ///
    /// [`wake_on_receipts`]: Self::wake_on_receipts
    pub fn receipt(&self, id: String) -> bool {
        let wake = self.shared.wake_on_receipt.load(Ordering::Relaxed);
        self.shared.push_quietly(ConnectionMsg::Receipt(id), wake)
    }

    /// Whether receipts should wake the task: a client waits for a `delivered`, or kept
    /// messages wait for receipts to make room.
    pub fn wake_on_receipts(&self, wake: bool) {
        self.shared.wake_on_receipt.store(wake, Ordering::Relaxed);
    }

    /// The task wrote (or dropped) a queued frame of `size` bytes.
    pub fn written(&self, size: usize) {
        self.shared.queued.fetch_sub(size, Ordering::Relaxed);
    }

    /// Bytes waiting now.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Whether more bytes waited than the limit allows (the connection is closing).
    pub fn is_overflowed(&self) -> bool {
        self.shared.overflowed.load(Ordering::Relaxed)
    }

    /// Completes once the mailbox has overflowed (at once if it already has).
    pub async fn overflowed(&self) {
        if self.shared.overflowed.load(Ordering::Relaxed) {
            return;
        }
        self.shared.overflow.notified().await;
    }

    /// Asks the task to stop after the message it is handling.
    pub fn stop(&self, reason: Option<String>) {
        if !self.shared.stopping.swap(true, Ordering::Relaxed) {
            tracing::debug!(reason = reason.as_deref().unwrap_or("none"), "connection stopping");
        }
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Relaxed)
    }

    /// Sends `make()` after `delay` (a timer task; dropped if the connection is gone by then).
    pub fn send_after(&self, delay: Duration, make: impl FnOnce() -> ConnectionMsg + Send + 'static) {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            shared.push(make());
        });
    }
}

impl Shared {
    fn push(&self, msg: ConnectionMsg) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        self.lock().push_back(msg);
        self.arrived.notify_one();
        true
    }

    /// Queues `msg`, waking the task only when `wake` or when many wait.
    fn push_quietly(&self, msg: ConnectionMsg, wake: bool) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let waiting = {
            let mut queue = self.lock();
            queue.push_back(msg);
            queue.len()
        };
        if wake || waiting > QUIET_RECEIPTS {
            self.arrived.notify_one();
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<ConnectionMsg>> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inbox {
    /// The next message, waiting for one.
    pub async fn recv(&mut self) -> ConnectionMsg {
        loop {
            if let Some(msg) = self.try_recv() {
                return msg;
            }
            // A push between the check and this wait leaves a permit: no wake-up is lost.
            self.shared.arrived.notified().await;
        }
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<ConnectionMsg> {
        let mut queue = self.shared.lock();
        let msg = queue.pop_front();
        // A burst leaves a large buffer behind; an idle connection should not keep it.
        if queue.is_empty() && queue.capacity() > 16 {
            queue.shrink_to(4);
        }
        msg
    }

    /// The task has ended: senders are told, and what is queued is dropped.
    pub fn close(&mut self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::task::{Context, Wake, Waker};

    /// Counts the wake-ups of a task waiting on its inbox.
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Whether a task waiting on an empty inbox is woken by `push`, and what it then takes.
    fn woken_by(push: impl FnOnce(&Mailbox)) -> (bool, Vec<ConnectionMsg>) {
        let (mailbox, mut inbox) = Mailbox::channel(1 << 20);
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        {
            let mut waiting = pin!(inbox.recv());
            assert!(waiting.as_mut().poll(&mut cx).is_pending(), "the inbox starts empty");
            push(&mailbox);
        }
        let woken = wakes.0.load(Ordering::SeqCst) > 0;
        let taken = std::iter::from_fn(|| inbox.try_recv()).collect();
        (woken, taken)
    }

    fn receipts(taken: &[ConnectionMsg]) -> usize {
        taken.iter().filter(|m| matches!(m, ConnectionMsg::Receipt(_))).count()
    }

    #[test]
    fn a_receipt_waits_for_the_tasks_next_turn() {
        let (woken, taken) = woken_by(|m| assert!(m.receipt("7".into())));
        assert!(!woken);
        assert_eq!(receipts(&taken), 1, "the receipt is queued, not lost");
    }

    #[test]
    fn a_receipt_wakes_the_task_when_it_asked() {
        let (woken, taken) = woken_by(|m| {
            m.wake_on_receipts(true);
            m.receipt("7".into());
        });
        assert!(woken);
        assert_eq!(receipts(&taken), 1);
    }

    #[test]
    fn a_backlog_of_receipts_wakes_the_task() {
        let (woken, taken) = woken_by(|m| {
            for i in 0..=QUIET_RECEIPTS {
                m.receipt(i.to_string());
            }
        });
        assert!(woken);
        assert_eq!(receipts(&taken), QUIET_RECEIPTS + 1);
    }

    #[test]
    fn a_frame_always_wakes_the_task() {
        let frame = Frame { seq: None, body: Arc::from("{}"), kind: Default::default(), received_at: None, epoch: 0 };
        let (woken, taken) = woken_by(|m| assert!(m.deliver(frame)));
        assert!(woken);
        assert!(matches!(taken.as_slice(), [ConnectionMsg::Deliver(_)]));
    }

    #[test]
    fn nothing_is_queued_once_the_task_is_gone() {
        let (mailbox, mut inbox) = Mailbox::channel(1 << 20);
        inbox.close();
        assert!(!mailbox.receipt("7".into()));
        assert!(inbox.try_recv().is_none());
    }
}
