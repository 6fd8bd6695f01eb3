//! Windows anchored at session ends: the natural training unit of a session-based log. Each
//! session's events are targets once, in windows that end at the session's end, with the
//! events before them (earlier sessions included) as context.

use crate::alloc::with_capacity_huge;
use crate::error::{CoreError, Result};
use crate::validate::{check_at_least, check_ends, check_offsets_start, offsets_decrease};

/// Session windows as four columns: the sequence, the slice [start, stop) of the event array,
/// and the first event of the slice that is a target (`first_target`, > start): events from
/// start to first_target - 1 are context only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionWindows {
    pub seq: Vec<i64>,
    pub start: Vec<i64>,
    pub stop: Vec<i64>,
    pub first_target: Vec<i64>,
}

/// For sequence u with training events [a, b) (b = `ends[u]`, or the sequence end; with
/// `max_history`, a = max(a, b - max_history)) and each session [s, e) of `sessions` that
/// overlaps it (e clipped to b): the targets are the events [t0, e) with t0 = max(s, a + 1)
/// (a sequence's first event has nothing before it), cut from the session end backwards into
/// windows of at most `window` targets: stop = e, e - window, ... while stop > t0, each with
/// first_target = max(t0, stop - window) and start = max(a, stop - window - 1). So every
/// training event after a's is the target of exactly one window, which belongs to its session,
/// and no window reads an event at or after b. Windows come by sequence, then time.
///
/// `sessions` are offsets over the same events (non-decreasing, from offsets[0] to the last
/// offset) and every sequence start must be a session start: sessions never cross sequences.
pub fn session_windows(
    offsets: &[i64],
    sessions: &[i64],
    ends: Option<&[i64]>,
    window: i64,
    max_history: Option<i64>,
) -> Result<SessionWindows> {
    check_at_least("window", window, 1)?;
    if let Some(h) = max_history {
        check_at_least("max_history", h, 1)?;
    }
    check_offsets_start(offsets)?;
    if offsets.windows(2).any(|w| w[1] < w[0]) {
        return Err(offsets_decrease(offsets));
    }
    if let Some(ends) = ends {
        check_ends(offsets, ends)?;
    }
    check_sessions(offsets, sessions)?;
    let n_seq = offsets.len() - 1;
    let mut out = SessionWindows::default();
    let mut k = 0; // sessions[k] is the start of the first session of the current sequence
    for u in 0..n_seq {
        let (lo, hi) = (offsets[u], offsets[u + 1]);
        while k + 1 < sessions.len() && sessions[k] < lo {
            k += 1;
        }
        let b = ends.map_or(hi, |e| e[u]);
        let a = max_history.map_or(lo, |h| lo.max(b - h));
        let mut j = k;
        while j + 1 < sessions.len() && sessions[j] < b {
            let (s, e) = (sessions[j], sessions[j + 1].min(b));
            j += 1;
            let t0 = s.max(a.saturating_add(1));
            if e <= t0 {
                continue; // no target in the session span [s, e) (it ends before a, or holds only a's first event)
            }
            let n = (e - t0 - 1) / window + 1; // windows of the span [s, e) (no overflow for any window)
            out.reserve(n as usize)?;
            for i in (0..n).rev() {
                let stop = e - i * window;
                out.push(u as i64, a.max(stop - window - 1), stop, t0.max(stop - window));
            }
        }
    }
    Ok(out)
}

impl SessionWindows {
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }

    /// Room for `extra` more windows, reported as an error when it cannot be allocated.
    fn reserve(&mut self, extra: usize) -> Result<()> {
        if self.seq.capacity() - self.seq.len() >= extra {
            return Ok(());
        }
        let want = (self.seq.len() + extra).max(2 * self.seq.capacity()).max(1024);
        for col in [&mut self.seq, &mut self.start, &mut self.stop, &mut self.first_target] {
            let mut grown: Vec<i64> = with_capacity_huge("session_windows", want)?;
            grown.extend_from_slice(col);
            *col = grown;
        }
        Ok(())
    }

    fn push(&mut self, seq: i64, start: i64, stop: i64, first_target: i64) {
        self.seq.push(seq);
        self.start.push(start);
        self.stop.push(stop);
        self.first_target.push(first_target);
    }
}

/// Session offsets over the events of `offsets`: non-decreasing, from offsets[0] to the last
/// offset, and holding every sequence start (sessions never cross sequences).
fn check_sessions(offsets: &[i64], sessions: &[i64]) -> Result<()> {
    let (first, last) = (offsets[0], offsets[offsets.len() - 1]);
    match (sessions.first(), sessions.last()) {
        (Some(&s0), Some(&s1)) if s0 == first && s1 == last => {}
        _ => {
            return Err(CoreError::new("sessions", format!("must run from {first} to {last}, as the offsets do")));
        }
    }
    if let Some(i) = sessions.windows(2).position(|w| w[1] < w[0]) {
        return Err(CoreError::new("sessions", format!("decreases at index {}", i + 1)));
    }
    for (u, &lo) in offsets[..offsets.len() - 1].iter().enumerate() {
        if sessions.binary_search(&lo).is_err() {
            return Err(CoreError::new("sessions", format!("no session starts where sequence {u} does ({lo})")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(w: &SessionWindows) -> Vec<(i64, i64, i64, i64)> {
        (0..w.len()).map(|i| (w.seq[i], w.start[i], w.stop[i], w.first_target[i])).collect()
    }

    #[test]
    fn one_window_per_short_session_ending_at_its_end() {
        // one sequence of 7 events, sessions [0,3) [3,5) [5,7)
        let w = session_windows(&[0, 7], &[0, 3, 5, 7], None, 10, None).unwrap();
        assert_eq!(rows(&w), vec![(0, 0, 3, 1), (0, 0, 5, 3), (0, 0, 7, 5)]);
    }

    #[test]
    fn long_sessions_are_cut_backwards_and_context_is_bounded_by_the_window() {
        // sessions [0,2) [2,9); window 3: the second session's 7 targets in windows of 3, 3, 1
        let w = session_windows(&[0, 9], &[0, 2, 9], None, 3, None).unwrap();
        assert_eq!(rows(&w), vec![(0, 0, 2, 1), (0, 0, 3, 2), (0, 2, 6, 3), (0, 5, 9, 6)]);
    }

    #[test]
    fn ends_clip_sessions_and_max_history_moves_the_first_event() {
        // two sequences; the first ends its training at 6 (inside session [5,8))
        let (offsets, sessions) = ([0, 8, 11], [0, 2, 5, 8, 11]);
        let w = session_windows(&offsets, &sessions, Some(&[6, 11]), 10, None).unwrap();
        assert_eq!(rows(&w), vec![(0, 0, 2, 1), (0, 0, 5, 2), (0, 0, 6, 5), (1, 8, 11, 9)]);
        let w = session_windows(&offsets, &sessions, Some(&[6, 11]), 10, Some(3)).unwrap();
        assert_eq!(rows(&w), vec![(0, 3, 5, 4), (0, 3, 6, 5), (1, 8, 11, 9)]);
    }

    #[test]
    fn every_training_target_once_in_its_own_session() {
        let offsets = [0, 1, 13, 13, 40];
        let sessions = [0, 1, 4, 5, 13, 20, 21, 35, 40];
        let ends = [1, 10, 13, 38];
        for window in [1, 2, 3, 7, 50] {
            let w = session_windows(&offsets, &sessions, Some(&ends), window, None).unwrap();
            let mut targets = vec![];
            for (seq, start, stop, first) in rows(&w) {
                assert!(start < first && first < stop && stop <= ends[seq as usize]);
                assert!(stop - first <= window && stop - start <= window + 1);
                let session = sessions.partition_point(|&s| s <= first) - 1;
                assert!(stop <= sessions[session + 1], "a window ends inside its session");
                targets.extend(first..stop);
            }
            let want: Vec<i64> = (0..4).flat_map(|u| offsets[u] + 1..ends[u]).collect();
            assert_eq!(targets, want);
        }
    }

    #[test]
    fn bad_input_names_the_argument() {
        assert_eq!(session_windows(&[0, 4], &[0, 4], None, 0, None).unwrap_err().arg, "window");
        assert_eq!(session_windows(&[0, 4], &[0, 3], None, 2, None).unwrap_err().arg, "sessions");
        assert_eq!(session_windows(&[0, 2, 4], &[0, 1, 4], None, 2, None).unwrap_err().arg, "sessions");
        assert_eq!(session_windows(&[0, 4], &[0, 3, 2, 4], None, 2, None).unwrap_err().arg, "sessions");
        assert_eq!(session_windows(&[0, 4], &[0, 4], Some(&[5]), 2, None).unwrap_err().arg, "ends");
        assert_eq!(session_windows(&[0, 4], &[0, 4], None, 2, Some(0)).unwrap_err().arg, "max_history");
        assert!(session_windows(&[0], &[0], None, 2, None).unwrap().is_empty());
    }
}
