//! Prometheus API answers as Cortex sends them: checking the envelope and writing series and
//! samples for people.

use anyhow::{Result, anyhow, bail};
use opni_metrics_core::promql::string_literal as quoted;
use serde_json::Value;

/// The parsed answer `{"status":"success","data":…,"warnings":[…]}`; warnings go to stderr.
///
/// # Errors
/// The answer is not JSON, or its status is not `success` (the message carries Cortex's
/// `errorType` and `error`).
pub(super) fn answer(bytes: &[u8]) -> Result<Value> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| anyhow!("the gateway relayed an answer that is not Prometheus API JSON: {e}"))?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    if text("status") != "success" {
        bail!("the query failed: {} {}", text("errorType"), text("error"));
    }
    for w in v.get("warnings").and_then(Value::as_array).into_iter().flatten() {
        eprintln!("warning: {}", w.as_str().map_or_else(|| w.to_string(), str::to_owned));
    }
    Ok(v)
}

/// `data` of an answer (`null` if absent).
pub(super) fn data(mut v: Value) -> Value {
    v.get_mut("data").map(Value::take).unwrap_or(Value::Null)
}

pub(super) fn name(labels: &Value) -> String {
    let map = labels.as_object();
    let metric = map.and_then(|m| m.get("__name__")).and_then(Value::as_str).unwrap_or_default();
    let rest: Vec<String> = map
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "__name__")
        .map(|(k, v)| format!("{k}={}", quoted(v.as_str().unwrap_or_default())))
        .collect();
    if rest.is_empty() && !metric.is_empty() { metric.to_owned() } else { format!("{metric}{{{}}}", rest.join(",")) }
}

/// A sample `[ts, "value"]` (or a native histogram `[ts, {count, sum, …}]`) as (time, value).
pub(super) fn sample(p: &Value) -> (String, String) {
    let time = p.get(0).and_then(Value::as_f64).map_or_else(|| "-".to_owned(), super::when::show_unix);
    let value = match p.get(1) {
        Some(Value::String(s)) => s.clone(),
        Some(h @ Value::Object(_)) => {
            let f = |k: &str| h.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
            format!("histogram count={} sum={}", f("count"), f("sum"))
        }
        Some(other) => other.to_string(),
        None => "-".to_owned(),
    };
    (time, value)
}

/// The samples of a matrix series (`values`, or native histograms under `histograms`).
pub(super) fn points(series: &Value) -> &[Value] {
    ["values", "histograms"].iter().find_map(|k| series.get(*k).and_then(Value::as_array)).map_or(&[], Vec::as_slice)
}

/// The sample of a vector element (`value`, or a native histogram under `histogram`).
pub(super) fn point(element: &Value) -> Option<&Value> {
    element.get("value").or_else(|| element.get("histogram"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn series_names_read_like_promql() {
        assert_eq!(
            name(&json!({"__name__": "up", "job": "node", "instance": "a:9100"})),
            r#"up{instance="a:9100",job="node"}"#
        );
        assert_eq!(name(&json!({"__name__": "up"})), "up");
        assert_eq!(name(&json!({"job": "say \"hi\"\n"})), r#"{job="say \"hi\"\n"}"#);
        assert_eq!(name(&json!({})), "{}");
    }

    #[test]
    fn samples_and_histograms() {
        assert_eq!(sample(&json!([1_714_564_800, "1.5"])), ("2024-05-01T12:00:00Z".into(), "1.5".into()));
        let h = json!([1_714_564_800.25, {"count": "3", "sum": "4.5", "buckets": []}]);
        assert_eq!(sample(&h).1, "histogram count=3 sum=4.5");
    }

    #[test]
    fn failures_carry_cortex_words() {
        let e = answer(br#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#).unwrap_err();
        assert_eq!(e.to_string(), "the query failed: bad_data parse error at char 3");
        assert!(answer(b"<html>").is_err());
        let ok = answer(br#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#).unwrap();
        assert_eq!(data(ok)["resultType"], "scalar");
    }
}
