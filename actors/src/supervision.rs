//! The root's restart policy and the status board it keeps of its
//! subsystems. A leaf module: the root writes here, and everyone else
//! (the coordinator handle, readiness, `/metrics`, the ops API) reads the
//! board without sending a message to the root, so a root busy restarting
//! a subsystem never delays a health check.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What a subsystem is doing, as the root last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubsystemStatus {
    /// Started and not exited since.
    Running,
    /// Exited; the root is starting it again.
    Restarting,
    /// Failed more often than the restart policy allows. It stays down
    /// until an operator restarts it.
    Down,
}

impl SubsystemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Down => "down",
        }
    }
}

/// One line of the board.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SubsystemInfo {
    pub name: &'static str,
    pub status: SubsystemStatus,
    /// When the current (or, when down, the last) incarnation started.
    pub started_at: DateTime<Utc>,
    /// Restarts since this node started: after failures and by operators.
    pub restarts: u32,
}

/// The status board: written by the root, read by anyone holding a clone.
#[derive(Clone, Debug, Default)]
pub struct SubsystemBoard(Arc<RwLock<Vec<SubsystemInfo>>>);

impl SubsystemBoard {
    /// Every subsystem, in the root's start order.
    pub fn snapshot(&self) -> Vec<SubsystemInfo> {
        self.0.read().expect("subsystem board poisoned").clone()
    }

    /// One subsystem by name.
    pub fn get(&self, name: &str) -> Option<SubsystemInfo> {
        let board = self.0.read().expect("subsystem board poisoned");
        board.iter().find(|s| s.name == name).cloned()
    }

    /// Changes one subsystem's line, adding it first if it has none.
    pub(crate) fn update(&self, name: &'static str, change: impl FnOnce(&mut SubsystemInfo)) {
        let mut board = self.0.write().expect("subsystem board poisoned");
        let i = match board.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                board.push(SubsystemInfo {
                    name,
                    status: SubsystemStatus::Restarting,
                    started_at: Utc::now(),
                    restarts: 0,
                });
                board.len() - 1
            }
        };
        change(&mut board[i]);
    }
}

/// At most `max_restarts` restarts within any `window`; one more failure
/// in that window and the subsystem stays down. Erlang/OTP's restart
/// intensity: a subsystem that fails now and then is restarted forever,
/// one that fails in a loop is stopped rather than left to burn CPU and
/// flood the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// The recent restarts of one subsystem, for its [`RestartPolicy`]. The
/// caller passes the time, so tests need no real clock.
#[derive(Clone, Debug, Default)]
pub struct RestartHistory(VecDeque<Instant>);

impl RestartHistory {
    /// Whether a failure at `now` may be answered with a restart; if so,
    /// the restart is recorded.
    pub fn allow(&mut self, policy: RestartPolicy, now: Instant) -> bool {
        while let Some(first) = self.0.front() {
            if now.saturating_duration_since(*first) >= policy.window {
                self.0.pop_front();
            } else {
                break;
            }
        }
        if self.0.len() >= policy.max_restarts as usize {
            return false;
        }
        self.0.push_back(now);
        true
    }

    /// Forgets every restart: an operator's restart gives a fresh budget.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Restarts within the window as of the last call to `allow`.
    pub fn recent(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_restarts: u32, secs: u64) -> RestartPolicy {
        RestartPolicy {
            max_restarts,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn five_restarts_in_a_minute_are_allowed_and_the_sixth_failure_is_not() {
        let t0 = Instant::now();
        let mut history = RestartHistory::default();
        for i in 0..5 {
            assert!(history.allow(policy(5, 60), t0 + Duration::from_secs(i)));
        }
        assert!(!history.allow(policy(5, 60), t0 + Duration::from_secs(10)));
        assert_eq!(history.recent(), 5);
    }

    #[test]
    fn restarts_older_than_the_window_no_longer_count() {
        let t0 = Instant::now();
        let mut history = RestartHistory::default();
        for i in 0..5 {
            assert!(history.allow(policy(5, 60), t0 + Duration::from_secs(i)));
        }
        // The first restart (at t0) leaves the window at t0 + 60 s.
        assert!(history.allow(policy(5, 60), t0 + Duration::from_secs(60)));
        assert!(!history.allow(policy(5, 60), t0 + Duration::from_secs(60)));
    }

    #[test]
    fn a_subsystem_failing_once_a_minute_is_restarted_forever() {
        let t0 = Instant::now();
        let mut history = RestartHistory::default();
        for i in 0..100 {
            assert!(history.allow(policy(1, 60), t0 + Duration::from_secs(61 * i)));
        }
    }

    #[test]
    fn a_limit_of_zero_gives_up_at_the_first_failure() {
        let mut history = RestartHistory::default();
        assert!(!history.allow(policy(0, 60), Instant::now()));
    }

    #[test]
    fn clearing_the_history_gives_a_fresh_budget() {
        let t0 = Instant::now();
        let mut history = RestartHistory::default();
        assert!(history.allow(policy(1, 60), t0));
        assert!(!history.allow(policy(1, 60), t0));
        history.clear();
        assert!(history.allow(policy(1, 60), t0));
    }

    #[test]
    fn the_board_hands_out_copies_of_its_lines() {
        let board = SubsystemBoard::default();
        board.update("orgs", |s| s.status = SubsystemStatus::Running);
        board.update("orgs", |s| s.restarts += 1);
        let line = board.get("orgs").unwrap();
        assert_eq!(line.status, SubsystemStatus::Running);
        assert_eq!(line.restarts, 1);
        assert!(board.get("mailer").is_none());
        assert_eq!(board.snapshot().len(), 1);
    }
}
