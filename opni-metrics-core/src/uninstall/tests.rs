use super::*;
use proptest::prelude::*;

fn task(delete: bool, delay_ms: u64) -> UninstallTask {
    let opts = UninstallOptions::new(delete, Duration::from_millis(delay_ms)).unwrap();
    UninstallTask::new(ClusterId::new("c1").unwrap(), CapabilityName::metrics(), opts, Timestamp(0))
}

#[test]
fn happy_path_with_delay_and_purge() {
    let mut t = task(true, 1_000);
    assert_eq!(t.handle(Timestamp(1), Input::Start), vec![Effect::MarkForUninstall, Effect::NotifyAgent]);
    assert_eq!(t.handle(Timestamp(2), Input::NodeDisabled), vec![Effect::WakeAt(Timestamp(1_002))]);
    assert!(t.handle(Timestamp(500), Input::Tick).is_empty(), "delay not over");
    assert_eq!(t.handle(Timestamp(1_002), Input::Tick), vec![Effect::RequestPurge]);
    let fx = t.handle(Timestamp(1_003), Input::PurgeRequested(Ok(())));
    let [Effect::WakeAt(at)] = fx[..] else { panic!("{fx:?}") };
    assert_eq!(t.handle(at, Input::Tick), vec![Effect::PollPurge]);
    let fx = t.handle(at, Input::PurgePolled(Ok(PurgeProgress::InProgress)));
    let [Effect::WakeAt(at2)] = fx[..] else { panic!("{fx:?}") };
    assert!(at2 > at, "polls back off");
    assert_eq!(t.handle(at2, Input::Tick), vec![Effect::PollPurge]);
    assert_eq!(t.handle(at2, Input::PurgePolled(Ok(PurgeProgress::Done))), vec![Effect::RemoveCapability]);
    assert_eq!(t.progress(), Progress { current: 3, total: 4 });
    assert_eq!(t.cancel(at2), Err(TaskError::TooLateToCancel));
    assert!(t.handle(at2, Input::CapabilityRemoved).is_empty());
    assert_eq!(t.state, TaskState::Completed);
    assert_eq!(t.progress(), Progress { current: 4, total: 4 });
    let states: Vec<_> = t.transitions.iter().map(|x| x.state).collect();
    assert_eq!(states, vec![TaskState::Pending, TaskState::Running, TaskState::Completed]);
    assert_eq!(t.cancel(at2), Err(TaskError::AlreadyEnded { state: TaskState::Completed }));
}

#[test]
fn without_options_goes_straight_to_removal() {
    let mut t = task(false, 0);
    t.handle(Timestamp(1), Input::Start);
    assert_eq!(t.handle(Timestamp(2), Input::NodeDisabled), vec![Effect::RemoveCapability]);
    assert_eq!(t.progress(), Progress { current: 1, total: 2 });
}

#[test]
fn cancel_restores_and_resyncs() {
    let mut t = task(true, 60_000);
    t.handle(Timestamp(1), Input::Start);
    t.handle(Timestamp(2), Input::NodeDisabled);
    assert_eq!(t.cancel(Timestamp(3)), Ok(vec![Effect::RestoreCapability, Effect::NotifyAgent]));
    assert_eq!(t.state, TaskState::Canceled);
    assert!(t.handle(Timestamp(60_002), Input::Tick).is_empty(), "a canceled task does nothing");
}

#[test]
fn cancel_before_start_has_nothing_to_restore() {
    let mut t = task(false, 0);
    assert_eq!(t.cancel(Timestamp(1)), Ok(vec![]));
}

#[test]
fn repeated_purge_errors_fail_and_restore() {
    let mut t = task(true, 0);
    t.handle(Timestamp(0), Input::Start);
    let mut fx = t.handle(Timestamp(0), Input::NodeDisabled);
    assert_eq!(fx, vec![Effect::RequestPurge]);
    let mut now = Timestamp(0);
    for _ in 0..MAX_PURGE_ERRORS {
        fx = t.handle(now, Input::PurgeRequested(Err("upstream down".into())));
        if let [Effect::WakeAt(at)] = fx[..] {
            now = at;
            assert_eq!(t.handle(now, Input::Tick), vec![Effect::RequestPurge]);
        }
    }
    assert_eq!(fx, vec![Effect::RestoreCapability, Effect::NotifyAgent]);
    assert_eq!(t.state, TaskState::Failed);
    assert!(t.logs.last().unwrap().message.contains("upstream down"));
}

#[test]
fn options_are_validated() {
    let e = UninstallOptions::new(false, Duration::from_secs(8 * 24 * 3600)).unwrap_err();
    assert!(e.to_string().starts_with("initialDelay:"), "{e}");
}

#[test]
fn logs_are_bounded() {
    let mut t = task(true, 0);
    t.handle(Timestamp(0), Input::Start);
    t.handle(Timestamp(0), Input::NodeDisabled);
    t.handle(Timestamp(0), Input::PurgeRequested(Ok(())));
    for i in 0..1_000 {
        t.handle(Timestamp(i), Input::PurgePolled(Err("x".into())));
        t.handle(Timestamp(i), Input::PurgePolled(Ok(PurgeProgress::InProgress)));
    }
    assert!(t.logs.len() <= MAX_LOG_ENTRIES);
    assert_eq!(t.logs[0].message, "disabling the node");
}

#[derive(Debug, Clone)]
enum Op {
    Input(Input),
    Cancel,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Input(Input::Start)),
        Just(Op::Input(Input::NodeDisabled)),
        Just(Op::Input(Input::Tick)),
        any::<bool>().prop_map(|ok| Op::Input(Input::PurgeRequested(if ok { Ok(()) } else { Err("e".into()) }))),
        prop_oneof![Just(Ok(PurgeProgress::Done)), Just(Ok(PurgeProgress::InProgress)), Just(Err("e".to_owned()))]
            .prop_map(|r| Op::Input(Input::PurgePolled(r))),
        Just(Op::Input(Input::CapabilityRemoved)),
        Just(Op::Input(Input::Fatal("boom".into()))),
        Just(Op::Cancel),
        (0u64..120_000).prop_map(Op::Advance),
    ]
}

/// Runs `ops` from `now`, returning every effect emitted.
fn run(t: &mut UninstallTask, mut now: Timestamp, ops: &[Op]) -> (Timestamp, Vec<Effect>) {
    let mut all = Vec::new();
    for o in ops {
        match o {
            Op::Input(i) => all.extend(t.handle(now, i.clone())),
            Op::Cancel => all.extend(t.cancel(now).unwrap_or_default()),
            Op::Advance(ms) => now = now.after(Duration::from_millis(*ms)),
        }
    }
    (now, all)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// (d) never two terminal states; restore exactly on failure or cancel after start.
    #[test]
    fn at_most_one_terminal_state(delete in any::<bool>(), delay in 0u64..100_000, ops in prop::collection::vec(op(), 0..60)) {
        let mut t = task(delete, delay);
        let mut started = false;
        let mut restores = 0;
        let mut now = Timestamp(0);
        for o in &ops {
            let was_terminal = t.state.is_terminal();
            let before = t.state;
            let fx = match o {
                Op::Input(i) => t.handle(now, i.clone()),
                Op::Cancel => t.cancel(now).unwrap_or_default(),
                Op::Advance(ms) => { now = now.after(Duration::from_millis(*ms)); vec![] }
            };
            if was_terminal {
                prop_assert_eq!(t.state, before, "terminal state changed");
                prop_assert!(fx.is_empty());
            }
            started |= t.step != Step::NotStarted || t.transitions.iter().any(|x| x.state == TaskState::Running);
            restores += fx.iter().filter(|e| **e == Effect::RestoreCapability).count();
            if let Some(i) = fx.iter().position(|e| *e == Effect::RestoreCapability) {
                prop_assert_eq!(fx.get(i + 1), Some(&Effect::NotifyAgent));
            }
        }
        let terminals = t.transitions.iter().filter(|x| x.state.is_terminal()).count();
        prop_assert!(terminals <= 1, "{:?}", t.transitions);
        let restored_states = matches!(t.state, TaskState::Failed | TaskState::Canceled);
        let was_running = t.transitions.iter().any(|x| x.state == TaskState::Running);
        prop_assert_eq!(restores, usize::from(restored_states && was_running && started));
        let times: Vec<_> = t.transitions.iter().map(|x| x.at).collect();
        prop_assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    /// (d) a task persisted at any point and resumed behaves exactly as one never interrupted.
    #[test]
    fn resumes_identically(delete in any::<bool>(), delay in 0u64..100_000, ops in prop::collection::vec(op(), 0..60), cut in 0usize..60) {
        let cut = cut.min(ops.len());
        let mut straight = task(delete, delay);
        let (_, fx_straight) = run(&mut straight, Timestamp(0), &ops);

        let mut first = task(delete, delay);
        let (now, mut fx_resumed) = run(&mut first, Timestamp(0), &ops[..cut]);
        let persisted = serde_json::to_string(&first).unwrap();
        let mut resumed: UninstallTask = serde_json::from_str(&persisted).unwrap();
        prop_assert_eq!(&resumed, &first);
        // resume() re-issues only effects of the current step, which the runner performs idempotently
        for e in resumed.resume() {
            prop_assert!(!matches!(e, Effect::RestoreCapability), "resume never restores");
        }
        let (_, rest) = run(&mut resumed, now, &ops[cut..]);
        fx_resumed.extend(rest);
        prop_assert_eq!(resumed, straight);
        prop_assert_eq!(fx_resumed, fx_straight);
    }
}
