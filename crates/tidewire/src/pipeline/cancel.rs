//! Waiting for a run's cancellation beside a busy stream, at the cost of an atomic.
//!
//! A generation waits on two things at once: the model's next token and the run's
//! cancellation. `select!` polls both whenever the task wakes, and the task wakes
//! for every token; polling a `CancellationToken`'s future takes the token's lock and
//! then its waiters' lock. [`Cancelled`] polls the token's future only when that
//! future woke the task (or on its first poll, to register).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Resolves when `token` is cancelled; cheap to poll while it is not.
pub struct Cancelled<'a> {
    wait: Pin<Box<WaitForCancellationFuture<'a>>>,
    signal: Arc<Signal>,
    /// The waker the token's future holds, made once.
    waker: Waker,
    /// The task's waker `signal` holds, to register it again only when it changes.
    task: Option<Waker>,
}

/// Set by the token's future when it wakes; forwards the wake-up to the task.
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<'a> Cancelled<'a> {
    /// Waits for `token`.
    pub fn new(token: &'a CancellationToken) -> Self {
        let signal = Arc::new(Signal {
            // The first poll must reach the token's future to register with it.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            wait: Box::pin(token.cancelled()),
            waker: Waker::from(Arc::clone(&signal)),
            signal,
            task: None,
        }
    }
}

impl Future for Cancelled<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // Registered before the flag is read: a wake-up between the two still
        // reaches this task. A task's waker rarely changes; comparing it is cheaper
        // than registering it again.
        if !this
            .task
            .as_ref()
            .is_some_and(|task| task.will_wake(cx.waker()))
        {
            this.signal.task.register(cx.waker());
            this.task = Some(cx.waker().clone());
        }
        if !this.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.wait
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn resolves_when_the_token_is_cancelled_while_waiting() {
        let token = CancellationToken::new();
        let cancel = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cancel.cancel();
        });
        tokio::time::timeout(Duration::from_secs(5), Cancelled::new(&token))
            .await
            .expect("the cancellation was missed");
    }

    #[tokio::test]
    async fn resolves_at_once_for_a_token_already_cancelled() {
        let token = CancellationToken::new();
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), Cancelled::new(&token))
            .await
            .expect("the cancellation was missed");
    }

    #[tokio::test]
    async fn other_wake_ups_leave_it_pending_and_a_parent_cancel_reaches_it() {
        let parent = CancellationToken::new();
        let token = parent.child_token();
        let mut cancelled = Cancelled::new(&token);
        let mut ticks = 0;
        // The task wakes for a timer many times; the cancellation is still seen.
        let outcome = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                tokio::select! {
                    biased;
                    () = &mut cancelled => return ticks,
                    () = tokio::time::sleep(Duration::from_millis(1)) => {
                        ticks += 1;
                        if ticks == 5 {
                            parent.cancel();
                        }
                    }
                }
            }
        })
        .await
        .expect("the cancellation was missed");
        assert_eq!(outcome, 5);
    }
}
