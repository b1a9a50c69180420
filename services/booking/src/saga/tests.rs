//! The transition table, state by state.
use super::*;

const OK: LocalSteps = LocalSteps {
    reserve_booking_fails: false,
    confirm_booking_fails: false,
};

fn run(steps: LocalSteps, inputs: &[Input]) -> (Vec<State>, Vec<Command>, Option<FailureReason>) {
    let first = start();
    let mut state = first.next;
    let mut states = vec![state];
    let mut commands = first.commands;
    let mut failure = None;
    for input in inputs {
        let d = transition(state, *input, steps)
            .unwrap_or_else(|| panic!("{state} does not take {input:?}"));
        state = d.next;
        states.push(state);
        commands.extend(d.commands);
        failure = d.failure.or(failure);
    }
    (states, commands, failure)
}

#[test]
fn a_confirmed_booking_is_cancelled_step_by_step() {
    use Command as C;
    use State as S;
    let (states, commands, failure) = run(
        OK,
        &[
            Input::SeatReserved,
            Input::PaymentCollected,
            Input::CancelRequested,
            Input::PaymentRefunded,
            Input::SeatReleased,
        ],
    );
    assert_eq!(
        states,
        [
            S::ReservingSeat,
            S::CollectingPayment,
            S::Confirmed,
            S::CancelRefunding,
            S::CancelReleasingSeat,
            S::Cancelled
        ]
    );
    assert_eq!(
        commands,
        [
            C::ReserveSeat,
            C::CollectPayment,
            C::PublishConfirmed,
            C::RefundPayment,
            C::ReleaseSeat,
            C::PublishCancelled
        ]
    );
    assert_eq!(failure, None);
    assert_eq!(S::Cancelled.status(), "CANCELLED");
    assert_eq!(S::CancelRefunding.status(), "CANCELLING");
    assert!(S::Cancelled.is_terminal());
}

#[test]
fn a_cancellation_asks_again_and_only_a_confirmed_booking_is_cancelled() {
    use State as S;
    for (state, command) in [
        (S::CancelRefunding, Command::RefundPayment),
        (S::CancelReleasingSeat, Command::ReleaseSeat),
    ] {
        let d = transition(state, Input::DeadlinePassed, OK).expect("asks again");
        assert_eq!((d.next, d.commands), (state, vec![command]));
    }
    for state in State::ALL {
        let moved = transition(state, Input::CancelRequested, OK).is_some();
        assert_eq!(moved, state == S::Confirmed, "{state}");
    }
    // A duplicate refund or release after the cancellation changes nothing.
    assert_eq!(transition(S::Cancelled, Input::PaymentRefunded, OK), None);
    assert_eq!(transition(S::Cancelled, Input::SeatReleased, OK), None);
    assert_eq!(
        transition(S::CancelReleasingSeat, Input::PaymentRefunded, OK),
        None
    );
}

#[test]
fn every_row_of_the_table() {
    use Command as C;
    use State as S;
    let fail_reserve = LocalSteps {
        reserve_booking_fails: true,
        ..OK
    };
    let fail_confirm = LocalSteps {
        confirm_booking_fails: true,
        ..OK
    };
    let declined = Input::PaymentDeclined(FailureReason::PaymentDeclined);
    let sold_out = Input::SeatUnavailable(SeatUnavailableReason::SoldOut);
    type Expected = Option<(S, C, Option<FailureReason>)>;
    let rows: &[(S, Input, LocalSteps, Expected)] = &[
        (
            S::ReservingSeat,
            Input::SeatReserved,
            OK,
            Some((S::CollectingPayment, C::CollectPayment, None)),
        ),
        (
            S::ReservingSeat,
            Input::SeatReserved,
            fail_reserve,
            Some((
                S::ReleasingSeat,
                C::ReleaseSeat,
                Some(FailureReason::BookingReservationFailed),
            )),
        ),
        (
            S::ReservingSeat,
            sold_out,
            OK,
            Some((S::Failed, C::PublishFailed, Some(FailureReason::SoldOut))),
        ),
        (
            S::ReservingSeat,
            Input::SeatUnavailable(SeatUnavailableReason::FlightNotFound),
            OK,
            Some((
                S::Failed,
                C::PublishFailed,
                Some(FailureReason::FlightNotFound),
            )),
        ),
        (
            S::ReservingSeat,
            Input::SeatUnavailable(SeatUnavailableReason::ReservationFailed),
            OK,
            Some((
                S::Failed,
                C::PublishFailed,
                Some(FailureReason::SeatReservationFailed),
            )),
        ),
        (
            S::CollectingPayment,
            Input::PaymentCollected,
            OK,
            Some((S::Confirmed, C::PublishConfirmed, None)),
        ),
        (
            S::CollectingPayment,
            Input::PaymentCollected,
            fail_confirm,
            Some((
                S::RefundingPayment,
                C::RefundPayment,
                Some(FailureReason::ConfirmationFailed),
            )),
        ),
        (
            S::CollectingPayment,
            declined,
            OK,
            Some((
                S::ReleasingSeat,
                C::ReleaseSeat,
                Some(FailureReason::PaymentDeclined),
            )),
        ),
        (
            S::CollectingPayment,
            Input::PaymentDeclined(FailureReason::PaymentFailed),
            OK,
            Some((
                S::ReleasingSeat,
                C::ReleaseSeat,
                Some(FailureReason::PaymentFailed),
            )),
        ),
        (
            S::RefundingPayment,
            Input::PaymentRefunded,
            OK,
            Some((S::ReleasingSeat, C::ReleaseSeat, None)),
        ),
        (
            S::ReleasingSeat,
            Input::SeatReleased,
            OK,
            Some((S::Failed, C::PublishFailed, None)),
        ),
        (
            S::Failed,
            Input::SeatReserved,
            OK,
            Some((S::Failed, C::ReleaseSeat, None)),
        ),
        (
            S::Failed,
            Input::PaymentCollected,
            OK,
            Some((S::Failed, C::RefundPayment, None)),
        ),
        (
            S::ReservingSeat,
            Input::DeadlinePassed,
            OK,
            Some((
                S::ReleasingSeat,
                C::ReleaseSeat,
                Some(FailureReason::SeatReservationTimedOut),
            )),
        ),
        (
            S::CollectingPayment,
            Input::DeadlinePassed,
            OK,
            Some((
                S::RefundingPayment,
                C::RefundPayment,
                Some(FailureReason::PaymentTimedOut),
            )),
        ),
        (
            S::ReleasingSeat,
            Input::SeatReserved,
            OK,
            Some((S::ReleasingSeat, C::ReleaseSeat, None)),
        ),
        (
            S::RefundingPayment,
            Input::PaymentCollected,
            OK,
            Some((S::RefundingPayment, C::RefundPayment, None)),
        ),
        (
            S::ReleasingSeat,
            Input::PaymentCollected,
            OK,
            Some((S::ReleasingSeat, C::RefundPayment, None)),
        ),
        // Duplicates and stale replies change nothing.
        (S::Confirmed, Input::DeadlinePassed, OK, None),
        (S::Failed, Input::DeadlinePassed, OK, None),
        (
            S::Failed,
            Input::PaymentRefunded,
            OK,
            Some((S::Failed, C::ReleaseSeat, None)),
        ),
        (S::CollectingPayment, Input::SeatReserved, OK, None),
        (S::Confirmed, Input::PaymentCollected, OK, None),
        (S::Confirmed, Input::SeatReserved, OK, None),
        (S::Failed, Input::SeatReleased, OK, None),
        (S::Failed, declined, OK, None),
        (S::ReleasingSeat, Input::PaymentRefunded, OK, None),
        (S::ReservingSeat, Input::PaymentCollected, OK, None),
    ];
    for (state, input, steps, expected) in rows {
        let got = transition(*state, *input, *steps).map(|d| {
            assert_eq!(d.commands.len(), 1);
            (d.next, d.commands[0], d.failure)
        });
        assert_eq!(got, *expected, "{state} + {input:?} with {steps:?}");
    }
}

#[test]
fn a_dead_lettered_forward_step_holds_the_saga_and_a_replay_resumes_it() {
    for (waiting, step) in [
        (State::ReservingSeat, Step::ReserveSeat),
        (State::CollectingPayment, Step::CollectPayment),
    ] {
        let d = transition(waiting, Input::StepDeadLettered(step), OK).expect("a decision");
        assert_eq!(d.next, waiting);
        assert!(d.hold);
        assert!(d.commands.is_empty());
        assert_eq!(d.failure, None);
    }
    // A late copy of a step the saga has moved past changes nothing.
    assert_eq!(
        transition(
            State::CollectingPayment,
            Input::StepDeadLettered(Step::ReserveSeat),
            OK
        ),
        None
    );
    assert_eq!(
        transition(
            State::ReservingSeat,
            Input::StepDeadLettered(Step::CollectPayment),
            OK
        ),
        None
    );
    // Compensations and ended sagas are not held: their deadlines park them.
    for other in [
        State::RefundingPayment,
        State::ReleasingSeat,
        State::Confirmed,
        State::Failed,
    ] {
        for step in [Step::ReserveSeat, Step::CollectPayment] {
            assert_eq!(transition(other, Input::StepDeadLettered(step), OK), None);
        }
    }
    // Held while collecting payment; the replayed collect confirms it.
    let (states, _, failure) = run(
        OK,
        &[
            Input::SeatReserved,
            Input::StepDeadLettered(Step::CollectPayment),
            Input::PaymentCollected,
        ],
    );
    assert_eq!(states.last(), Some(&State::Confirmed));
    assert_eq!(failure, None);
    // Held, never replayed: the hold deadline compensates.
    let (states, _, failure) = run(
        OK,
        &[
            Input::SeatReserved,
            Input::StepDeadLettered(Step::CollectPayment),
            Input::DeadlinePassed,
            Input::PaymentRefunded,
            Input::SeatReleased,
        ],
    );
    assert_eq!(states.last(), Some(&State::Failed));
    assert_eq!(failure, Some(FailureReason::PaymentTimedOut));
}

#[test]
fn a_stuck_compensation_parks_the_saga() {
    for stuck in [State::RefundingPayment, State::ReleasingSeat] {
        let d = transition(stuck, Input::DeadlinePassed, OK).expect("a decision");
        assert_eq!(d.next, State::Failed);
        assert_eq!(d.commands, [Command::Park, Command::PublishFailed]);
        assert_eq!(d.failure, Some(FailureReason::CompensationFailed));
    }
}

#[test]
fn a_payment_that_times_out_is_refunded_even_when_it_comes_late() {
    let (states, commands, failure) = run(
        OK,
        &[
            Input::SeatReserved,
            Input::DeadlinePassed,
            Input::PaymentCollected,
            Input::PaymentRefunded,
            Input::SeatReleased,
        ],
    );
    assert_eq!(
        states,
        [
            State::ReservingSeat,
            State::CollectingPayment,
            State::RefundingPayment,
            State::RefundingPayment,
            State::ReleasingSeat,
            State::Failed
        ]
    );
    assert_eq!(
        commands
            .iter()
            .filter(|c| **c == Command::RefundPayment)
            .count(),
        2
    );
    assert_eq!(failure, Some(FailureReason::PaymentTimedOut));
}

#[test]
fn the_happy_path_confirms() {
    let (states, commands, failure) = run(OK, &[Input::SeatReserved, Input::PaymentCollected]);
    assert_eq!(states.last(), Some(&State::Confirmed));
    assert_eq!(
        commands,
        [
            Command::ReserveSeat,
            Command::CollectPayment,
            Command::PublishConfirmed
        ]
    );
    assert_eq!(failure, None);
}

#[test]
fn chain_seat_not_reserved() {
    let (states, commands, failure) = run(
        OK,
        &[Input::SeatUnavailable(SeatUnavailableReason::SoldOut)],
    );
    assert_eq!(states, [State::ReservingSeat, State::Failed]);
    assert_eq!(commands, [Command::ReserveSeat, Command::PublishFailed]);
    assert_eq!(failure, Some(FailureReason::SoldOut));
}

#[test]
fn chain_booking_not_reserved_or_payment_not_collected() {
    let fail_reserve = LocalSteps {
        reserve_booking_fails: true,
        ..OK
    };
    let (states, commands, failure) =
        run(fail_reserve, &[Input::SeatReserved, Input::SeatReleased]);
    assert_eq!(
        states,
        [State::ReservingSeat, State::ReleasingSeat, State::Failed]
    );
    assert_eq!(
        commands,
        [
            Command::ReserveSeat,
            Command::ReleaseSeat,
            Command::PublishFailed
        ]
    );
    assert_eq!(failure, Some(FailureReason::BookingReservationFailed));

    let (states, commands, failure) = run(
        OK,
        &[
            Input::SeatReserved,
            Input::PaymentDeclined(FailureReason::PaymentDeclined),
            Input::SeatReleased,
        ],
    );
    assert_eq!(
        states,
        [
            State::ReservingSeat,
            State::CollectingPayment,
            State::ReleasingSeat,
            State::Failed
        ]
    );
    assert_eq!(
        commands,
        [
            Command::ReserveSeat,
            Command::CollectPayment,
            Command::ReleaseSeat,
            Command::PublishFailed
        ]
    );
    assert_eq!(failure, Some(FailureReason::PaymentDeclined));
}

#[test]
fn chain_booking_not_confirmed() {
    let fail_confirm = LocalSteps {
        confirm_booking_fails: true,
        ..OK
    };
    let (states, commands, failure) = run(
        fail_confirm,
        &[
            Input::SeatReserved,
            Input::PaymentCollected,
            Input::PaymentRefunded,
            Input::SeatReleased,
        ],
    );
    assert_eq!(
        states,
        [
            State::ReservingSeat,
            State::CollectingPayment,
            State::RefundingPayment,
            State::ReleasingSeat,
            State::Failed
        ]
    );
    assert_eq!(
        commands,
        [
            Command::ReserveSeat,
            Command::CollectPayment,
            Command::RefundPayment,
            Command::ReleaseSeat,
            Command::PublishFailed
        ]
    );
    assert_eq!(failure, Some(FailureReason::ConfirmationFailed));
}

#[test]
fn states_round_trip_and_map_to_statuses() {
    for s in State::ALL {
        assert_eq!(State::parse(s.as_str()), Some(s));
        let open = matches!(s.status(), "PENDING" | "CANCELLING");
        assert_eq!(open, !s.is_terminal(), "{s}");
    }
}
