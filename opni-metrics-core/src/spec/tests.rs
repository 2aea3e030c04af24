use super::*;

fn valid() -> MetricsCapabilitySpec {
    let mut s = MetricsCapabilitySpec::default();
    s.prometheus.scrape_jobs.push(ScrapeJob {
        name: "node".into(),
        targets: vec!["127.0.0.1:9100".into()],
        metrics_path: None,
        scrape_interval: None,
    });
    s
}

fn field_of(s: &MetricsCapabilitySpec) -> String {
    s.validate().expect_err("should be invalid").field
}

#[test]
fn default_spec_is_valid() {
    MetricsCapabilitySpec::default().validate().unwrap();
    valid().validate().unwrap();
}

#[test]
fn errors_name_the_field() {
    let mut s = valid();
    s.prometheus.queue.max_shards = 0;
    assert_eq!(field_of(&s), "prometheus.queue.maxShards");

    let mut s = valid();
    s.prometheus.scrape_interval = PromDuration::from_millis(10);
    assert_eq!(field_of(&s), "prometheus.scrapeInterval");

    let mut s = valid();
    s.prometheus.namespaces.push("Bad_NS".into());
    assert_eq!(field_of(&s), "prometheus.namespaces[0]");

    let mut s = valid();
    s.prometheus.resources.limits.memory = Some("lots".into());
    assert_eq!(field_of(&s), "prometheus.resources.limits.memory");

    let mut s = valid();
    s.prometheus.scrape_jobs[0].targets[0] = "no-port".into();
    assert_eq!(field_of(&s), "prometheus.scrapeJobs[0].targets[0]");

    let mut s = valid();
    s.prometheus.scrape_jobs.push(s.prometheus.scrape_jobs[0].clone());
    assert_eq!(field_of(&s), "prometheus.scrapeJobs[1].name");

    let mut s = valid();
    s.prometheus.pod_monitor_selector.match_expressions.push(LabelSelectorRequirement {
        key: "app".into(),
        operator: SelectorOperator::In,
        values: vec![],
    });
    assert_eq!(field_of(&s), "prometheus.podMonitorSelector.matchExpressions[0].values");

    let mut s = valid();
    s.prometheus.image = Some("has space".into());
    assert_eq!(field_of(&s), "prometheus.image");

    let mut s = valid();
    s.prometheus.queue.max_backoff = PromDuration::from_millis(1);
    assert_eq!(field_of(&s), "prometheus.queue.maxBackoff");
}

#[test]
fn yaml_like_input_rejects_unknown_fields() {
    let ok: MetricsCapabilitySpec =
        serde_json::from_str(r#"{"prometheus":{"scrapeInterval":"15s","queue":{"maxShards":10}}}"#).unwrap();
    assert_eq!(ok.prometheus.scrape_interval, PromDuration::from_secs(15));
    assert_eq!(ok.prometheus.queue.max_shards, 10);
    assert_eq!(ok.prometheus.queue.capacity, QueueConfig::default().capacity);
    let e = serde_json::from_str::<MetricsCapabilitySpec>(r#"{"prometheus":{"scrapeIntervall":"15s"}}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("scrapeIntervall"), "{e}");
    let e = serde_json::from_str::<MetricsCapabilitySpec>(r#"{"prometheus":{"scrapeInterval":"fast"}}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("fast"), "{e}");
}

#[test]
fn quantities() {
    for ok in ["1", "500m", "0.5", "1Gi", "128Mi", "1e3", "2E-2", "1Ei"] {
        assert!(is_quantity(ok), "{ok}");
    }
    for bad in ["", "m", "1.2.3", "1 Gi", "1GB", "-1", "1e", "lots"] {
        assert!(!is_quantity(bad), "{bad}");
    }
}

#[test]
fn label_keys() {
    assert!(is_label_key("app"));
    assert!(is_label_key("app.kubernetes.io/name"));
    assert!(!is_label_key("/name"));
    assert!(!is_label_key("Bad_Prefix/name"));
    assert!(!is_label_key(""));
    assert!(is_label_value(""));
}

#[test]
fn normalized_sorts_unordered_lists_only() {
    let mut a = valid();
    a.prometheus.namespaces = vec!["b".into(), "a".into(), "a".into()];
    a.prometheus.scrape_jobs.insert(
        0,
        ScrapeJob {
            name: "z".into(),
            targets: vec!["h:2".into(), "h:1".into()],
            metrics_path: None,
            scrape_interval: None,
        },
    );
    let n = a.normalized();
    assert_eq!(n.prometheus.namespaces, vec!["a", "b"]);
    assert_eq!(n.prometheus.scrape_jobs[0].name, "node");
    assert_eq!(n.prometheus.scrape_jobs[1].targets, vec!["h:1", "h:2"]);
    assert_eq!(n.normalized(), n, "normalisation is idempotent");
}

#[test]
fn selectors_match() {
    let labels: BTreeMap<String, String> =
        [("env".to_owned(), "prod".to_owned()), ("team".to_owned(), "a".to_owned())].into();
    let mut sel = LabelSelector::default();
    assert!(sel.matches(&labels));
    sel.match_labels.insert("env".into(), "prod".into());
    assert!(sel.matches(&labels));
    sel.match_expressions.push(LabelSelectorRequirement {
        key: "team".into(),
        operator: SelectorOperator::In,
        values: vec!["b".into()],
    });
    assert!(!sel.matches(&labels));
    sel.match_expressions[0].operator = SelectorOperator::NotIn;
    assert!(sel.matches(&labels));
    sel.match_expressions.push(LabelSelectorRequirement {
        key: "x".into(),
        operator: SelectorOperator::Exists,
        values: vec![],
    });
    assert!(!sel.matches(&labels));
    sel.match_expressions[1].operator = SelectorOperator::DoesNotExist;
    assert!(sel.matches(&labels));
}
