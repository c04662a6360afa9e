//! Heavy stretches of request work get at most half of a shard thread's time while
//! other tasks are ready.
//!
//! A shard thread runs its ready tasks in the order they became ready, each until it
//! next waits. A task that parses a 1,000-event batch, or writes its 1,000 results, keeps
//! the thread for a millisecond or more; when several such tasks are ready together they
//! run back to back, and every request that became ready behind them (a single event,
//! an answer from another shard) waits for all of them. In the hostile mix, one client's
//! closed loop of maximum-size batches and six deep-page readers did that to an honest
//! client's requests at each of their steps.
//!
//! So heavy stretches share a budget per thread: [`HEAVY_BUDGET`] of work per
//! [`HEAVY_WINDOW`]. A stretch that finds the budget spent first yields, so that every
//! task that was ready runs once, and then starts a new window. Light work (a single
//! event, a small page) never waits here and waits behind at most about one budget of
//! heavy work. A thread busy with heavy work alone is not slowed: with nothing else
//! ready, a yield comes straight back.
//!
//! Tried first, and dropped: one heavy stretch per turn of the queue (a permit held over
//! a yield). It met the hostile mix's bound, but a saturated thread's turn lasts
//! milliseconds (its shard applies thousands of events in one), so large batches got one
//! stretch per turn and their throughput fell by 30 % (BENCHMARKS.md, 2026-12-07).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Request bodies and responses from this size up are parsed and written as heavy
/// work. A single event's body is a few hundred bytes; a batch of 64 events is about
/// this size.
pub const HEAVY_BYTES_MIN: usize = 16 * 1024;

/// Entries from which a list of results (a batch's, a page's) is built and written as
/// heavy work.
pub const HEAVY_ITEMS_MIN: usize = 64;

/// Heavy work a thread runs per window before the ready tasks get their turn: about
/// one maximum-size batch's parse.
pub const HEAVY_BUDGET: Duration = Duration::from_micros(1000);

/// The window the budget is counted in: heavy work gets at most half of a thread that
/// has other work ready.
pub const HEAVY_WINDOW: Duration = Duration::from_micros(2000);

/// This thread's current window.
#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    /// Heavy work run since `started`.
    spent: Duration,
}

impl Window {
    fn starting(at: Instant) -> Self {
        Window {
            started: at,
            spent: Duration::ZERO,
        }
    }
}

thread_local! {
    /// Starts with the thread's first heavy stretch.
    static WINDOW: Cell<Window> = Cell::new(Window::starting(Instant::now()));
}

fn window() -> Window {
    WINDOW.with(Cell::get)
}

fn set_window(window: Window) {
    WINDOW.with(|w| w.set(window));
}

/// Runs `work`, a heavy stretch without awaits, within this thread's budget (see the
/// module's documentation).
pub async fn run<R>(work: impl FnOnce() -> R) -> R {
    run_within(HEAVY_BUDGET, HEAVY_WINDOW, work).await
}

async fn run_within<R>(budget: Duration, window_length: Duration, work: impl FnOnce() -> R) -> R {
    loop {
        let now = Instant::now();
        let current = window();
        if now.duration_since(current.started) >= window_length {
            set_window(Window::starting(now));
            break;
        }
        if current.spent < budget {
            break;
        }
        tokio::task::yield_now().await;
        // Every task that was ready has run: unless another heavy stretch started a
        // window meanwhile (and may have spent it), this one starts the next.
        if window().started == current.started {
            set_window(Window::starting(Instant::now()));
            break;
        }
    }
    let started = Instant::now();
    let result = work();
    let mut current = window();
    current.spent += started.elapsed();
    set_window(current);
    result
}

/// Runs `work` as a heavy stretch when `heavy`, at once otherwise.
pub async fn run_if<R>(heavy: bool, work: impl FnOnce() -> R) -> R {
    if heavy {
        run(work).await
    } else {
        work()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Three heavy tasks ready together, each spending the whole budget, and a light task
    /// that becomes ready while the first runs: the light one runs after the first heavy
    /// stretch, not after all three.
    #[test]
    fn light_work_waits_for_one_budget_of_heavy_work_not_for_all() {
        const BUDGET: Duration = Duration::from_millis(1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let order = Rc::new(RefCell::new(Vec::new()));
        tokio::task::LocalSet::new().block_on(&runtime, async {
            let (light_tx, light_rx) = tokio::sync::oneshot::channel::<()>();
            let light_tx = Rc::new(RefCell::new(Some(light_tx)));
            let mut tasks = Vec::new();
            for i in 0..3 {
                let order = order.clone();
                let light_tx = light_tx.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    // A window longer than the test: only the budget decides.
                    run_within(BUDGET, Duration::from_secs(60), || {
                        order.borrow_mut().push(format!("heavy {i}"));
                        std::thread::sleep(BUDGET);
                        // The first stretch makes the light task ready.
                        if let Some(tx) = light_tx.borrow_mut().take() {
                            tx.send(()).unwrap();
                        }
                    })
                    .await
                }));
            }
            let light_order = order.clone();
            tasks.push(tokio::task::spawn_local(async move {
                light_rx.await.unwrap();
                light_order.borrow_mut().push("light".to_owned());
            }));
            for task in tasks {
                task.await.unwrap();
            }
        });
        assert_eq!(
            order.borrow()[..2],
            ["heavy 0", "light"],
            "the light task waited behind more than one budget of heavy work: {:?}",
            order.borrow()
        );
        assert_eq!(order.borrow().len(), 4);
    }
}
