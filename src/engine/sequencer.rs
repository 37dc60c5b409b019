//! The sequencer's decisions, as plain data: which offsets a batch takes, which of its events
//! are late, where the watermark moves (also inside one batch), what a watermark post or a
//! tick does to it. No locks, threads, channels or I/O: `Pipeline` holds a `Sequencer` under
//! its lock and does the locking, key-limit check, WAL framing and dispatch around it, so
//! every rule of the contract's "Time, watermark, lateness" is tested here with plain data.

/// The sequencer's counters: what a checkpoint records and a restore puts back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Offset the next event gets (offsets start at 1 and are never reused).
    pub next_offset: u64,
    /// Events in the state's history, late ones included.
    pub events: u64,
    pub late_events: u64,
    pub watermark: Option<i64>,
    /// Offset of the last event applied (`None` before any).
    pub last_offset: Option<u64>,
}

/// The answer to an accepted batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub accepted: u64,
    pub first_offset: u64,
    pub last_offset: u64,
}

/// When a batch or tick happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Now: the sequencer reads the clock when it orders the batch.
    Now,
    /// At this time, epoch ms (a logged record reapplied, tools and tests that give the time).
    At(i64),
}

/// A watermark change: after the event at `step`, the watermark is `watermark`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    pub step: u32,
    pub watermark: i64,
}

/// An event is late when its time is strictly below the watermark it is judged against.
pub fn is_late(time: i64, watermark: Option<i64>) -> bool {
    watermark.is_some_and(|w| time < w)
}

/// The sequencer's state: its counters, the next batch number, the latest arrival time it
/// handed out, and the pipeline's time rules.
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    pub counters: Counters,
    /// Sequence number of the next batch (events, marks or barrier) it orders.
    pub next_batch: u64,
    /// The latest arrival time it handed out (the clock read under its lock never goes back).
    last_arrival: i64,
    out_of_orderness: i64,
    processing_time: bool,
}

/// What the sequencer decided for a batch of events; nothing changes until `commit`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub ack: Ack,
    /// Events judged late.
    pub late: u64,
    /// Where the watermark moves, in processing order (empty when it stays).
    pub marks: Vec<Mark>,
    /// The watermark after the batch.
    pub watermark: Option<i64>,
}

impl Sequencer {
    /// A pipeline's sequencer before its first event: offsets start at 1.
    pub fn new(out_of_orderness: i64, processing_time: bool) -> Sequencer {
        Sequencer {
            counters: Counters {
                next_offset: 1,
                ..Counters::default()
            },
            out_of_orderness,
            processing_time,
            ..Sequencer::default()
        }
    }

    /// The time of a batch or tick that arrives `at`; `clock` is read only for `Now`. The
    /// pipeline calls this under the lock where the order is decided: a time read before the
    /// lock could lose the race for it to a later one and land below the watermark that one
    /// left, late by accident. It never goes below a time handed out before, so a clock
    /// stepped back makes nothing late either.
    pub fn arrival(&mut self, at: Arrival, clock: impl FnOnce() -> i64) -> i64 {
        let time = match at {
            Arrival::Now => clock().max(self.last_arrival),
            Arrival::At(time) => time,
        };
        self.last_arrival = self.last_arrival.max(time);
        time
    }

    /// Decides a batch whose events have `times` (`None`: no event time, it is `arrival`):
    /// its offsets, each event judged (`judged(step, late)`) against the watermark the events
    /// before it left, and the watermark marks. `times` must not be empty.
    pub fn decide(
        &self,
        times: &[Option<i64>],
        arrival: i64,
        mut judged: impl FnMut(usize, bool),
    ) -> Decision {
        let count = times.len() as u64;
        let mut marks = Vec::new();
        let mut watermark = self.counters.watermark;
        let mut late = 0;
        for (step, time) in times.iter().enumerate() {
            let time = time.unwrap_or(arrival);
            let is = is_late(time, watermark);
            judged(step, is);
            late += u64::from(is);
            let candidate = time.saturating_sub(self.out_of_orderness);
            if watermark.is_none_or(|w| candidate > w) {
                watermark = Some(candidate);
                marks.push(Mark {
                    step: step as u32,
                    watermark: candidate,
                });
            }
        }
        let first_offset = self.counters.next_offset;
        Decision {
            ack: Ack {
                accepted: count,
                first_offset,
                last_offset: first_offset + count - 1,
            },
            late,
            marks,
            watermark,
        }
    }

    /// Takes a decided batch into the state (once it is dispatched).
    pub fn commit(&mut self, decision: &Decision) {
        let c = &mut self.counters;
        c.next_offset += decision.ack.accepted;
        c.events += decision.ack.accepted;
        c.late_events += decision.late;
        c.watermark = decision.watermark;
        c.last_offset = Some(decision.ack.last_offset);
    }

    /// Where a watermark post of `time` moves the watermark: nowhere when it is not higher.
    pub fn advance(&self, time: i64) -> Option<i64> {
        self.counters
            .watermark
            .is_none_or(|w| time > w)
            .then_some(time)
    }

    /// Where a tick at `now` moves the watermark: in processing time it follows the clock
    /// (when that is higher); in event time, nowhere.
    pub fn tick(&self, now: i64) -> Option<i64> {
        if self.processing_time {
            self.advance(now)
        } else {
            None
        }
    }

    /// Takes a watermark move (of `advance` or `tick`) into the state.
    pub fn moved(&mut self, moved: Option<i64>) {
        if moved.is_some() {
            self.counters.watermark = moved;
        }
    }

    /// Sequence number for the next batch.
    pub fn take_batch(&mut self) -> u64 {
        let batch = self.next_batch;
        self.next_batch += 1;
        batch
    }

    /// Raises the next event offset to at least `offset` (offsets are never reused).
    pub fn raise_next_offset(&mut self, offset: u64) {
        self.counters.next_offset = self.counters.next_offset.max(offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decides and commits a batch; answers the decision and each event's lateness.
    fn run(seq: &mut Sequencer, times: &[Option<i64>], arrival: i64) -> (Decision, Vec<bool>) {
        let mut late = vec![false; times.len()];
        let decision = seq.decide(times, arrival, |step, is| late[step] = is);
        seq.commit(&decision);
        (decision, late)
    }

    fn mark(step: u32, watermark: i64) -> Mark {
        Mark { step, watermark }
    }

    #[test]
    fn the_watermark_is_the_highest_event_time_minus_out_of_orderness() {
        let mut seq = Sequencer::new(100, false);
        let (d, _) = run(&mut seq, &[Some(1_000), Some(1_500), Some(1_200)], 0);
        assert_eq!(d.watermark, Some(1_400));
        assert_eq!(d.marks, vec![mark(0, 900), mark(1, 1_400)]);
        assert_eq!(seq.counters.watermark, Some(1_400));
    }

    #[test]
    fn the_watermark_never_goes_back() {
        let mut seq = Sequencer::new(0, false);
        run(&mut seq, &[Some(5_000)], 0);
        let (d, _) = run(&mut seq, &[Some(1_000), Some(4_999)], 0);
        assert!(d.marks.is_empty());
        assert_eq!(seq.counters.watermark, Some(5_000));
        assert_eq!(seq.advance(10), None, "a lower watermark post is ignored");
        assert_eq!(seq.advance(5_000), None, "an equal one too");
    }

    #[test]
    fn inside_one_batch_each_event_is_judged_against_the_watermark_the_events_before_left() {
        let mut seq = Sequencer::new(10, false);
        // 100 moves it to 90; 80 is then late; 95 is not (above 90) and does not move it.
        let (d, late) = run(&mut seq, &[Some(100), Some(80), Some(95), Some(200)], 0);
        assert_eq!(late, vec![false, true, false, false]);
        assert_eq!(d.late, 1);
        assert_eq!(d.marks, vec![mark(0, 90), mark(3, 190)]);
        assert_eq!(seq.counters.late_events, 1);
        assert_eq!(seq.counters.events, 4);
    }

    #[test]
    fn late_is_strictly_below_the_watermark() {
        let mut seq = Sequencer::new(0, false);
        run(&mut seq, &[Some(1_000)], 0);
        let (_, late) = run(&mut seq, &[Some(1_000), Some(999)], 0);
        assert_eq!(late, vec![false, true], "equal to the watermark is on time");
        assert!(
            !is_late(i64::MIN, None),
            "nothing is late before any watermark"
        );
    }

    #[test]
    fn a_watermark_post_advances_it_and_max_closes_everything() {
        let mut seq = Sequencer::new(0, false);
        let moved = seq.advance(2_000);
        assert_eq!(moved, Some(2_000));
        seq.moved(moved);
        assert_eq!(seq.counters.watermark, Some(2_000));
        let (_, late) = run(&mut seq, &[Some(1_999)], 0);
        assert_eq!(late, vec![true]);
        let max = seq.advance(i64::MAX);
        seq.moved(max);
        assert_eq!(seq.counters.watermark, Some(i64::MAX));
        seq.moved(seq.advance(0));
        assert_eq!(seq.counters.watermark, Some(i64::MAX));
    }

    #[test]
    fn a_watermark_advance_takes_no_event_offset() {
        let mut seq = Sequencer::new(0, false);
        run(&mut seq, &[Some(1)], 0);
        seq.moved(seq.advance(50));
        seq.moved(seq.tick(60));
        let (d, _) = run(&mut seq, &[Some(70)], 0);
        assert_eq!(d.ack.first_offset, 2);
        assert_eq!(seq.counters.events, 2);
    }

    #[test]
    fn offsets_start_at_1_and_each_batch_takes_the_next_ones() {
        let mut seq = Sequencer::new(0, false);
        let (a, _) = run(&mut seq, &[Some(1), Some(2), Some(3)], 0);
        let (b, _) = run(&mut seq, &[Some(4)], 0);
        assert_eq!(
            (a.ack.accepted, a.ack.first_offset, a.ack.last_offset),
            (3, 1, 3)
        );
        assert_eq!((b.ack.first_offset, b.ack.last_offset), (4, 4));
        assert_eq!(seq.counters.last_offset, Some(4));
        assert_eq!(seq.counters.next_offset, 5);
    }

    #[test]
    fn a_decision_changes_nothing_until_committed() {
        let mut seq = Sequencer::new(0, false);
        let refused = seq.decide(&[Some(10)], 0, |_, _| {});
        assert_eq!(refused.ack.first_offset, 1);
        // Dispatch refused it (a full mailbox): the next batch gets the same offsets.
        let (d, _) = run(&mut seq, &[Some(5)], 0);
        assert_eq!(d.ack.first_offset, 1);
        assert_eq!(seq.counters.watermark, Some(5));
    }

    #[test]
    fn offsets_are_never_reused_below_a_floor() {
        let mut seq = Sequencer::new(0, false);
        run(&mut seq, &[Some(1)], 0);
        seq.raise_next_offset(100);
        seq.raise_next_offset(7);
        let (d, _) = run(&mut seq, &[Some(2)], 0);
        assert_eq!(d.ack.first_offset, 100);
    }

    #[test]
    fn in_processing_time_the_arrival_time_is_the_event_time() {
        let mut seq = Sequencer::new(0, true);
        let (d, late) = run(&mut seq, &[None, None], 5_000);
        assert_eq!(late, vec![false, false]);
        assert_eq!(d.marks, vec![mark(0, 5_000)]);
        assert_eq!(seq.counters.watermark, Some(5_000));
    }

    #[test]
    fn ticks_advance_the_watermark_with_the_clock_in_processing_time_only() {
        let mut seq = Sequencer::new(0, true);
        seq.moved(seq.tick(1_000));
        assert_eq!(seq.counters.watermark, Some(1_000));
        assert_eq!(
            seq.tick(900),
            None,
            "a clock behind the watermark moves nothing"
        );
        let event_time = Sequencer::new(0, false);
        assert_eq!(event_time.tick(1_000), None);
    }

    #[test]
    fn the_clock_read_under_the_lock_never_goes_below_a_time_handed_out() {
        let mut seq = Sequencer::default();
        let now = seq.arrival(Arrival::Now, || 1_000);
        assert_eq!(now, 1_000);
        assert_eq!(
            seq.arrival(Arrival::Now, || 999),
            1_000,
            "a clock stepped back"
        );
        // A reapplied record from a clock that was ahead.
        let ahead = now + 3_600_000;
        assert_eq!(seq.arrival(Arrival::At(ahead), || 0), ahead);
        assert_eq!(seq.arrival(Arrival::Now, || 1_001), ahead);
        assert_eq!(
            seq.arrival(Arrival::At(5), || 0),
            5,
            "a logged time is kept as logged"
        );
        assert_eq!(seq.arrival(Arrival::Now, || 1_002), ahead);
    }
}
