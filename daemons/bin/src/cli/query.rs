//! `opni-metrics query`: PromQL through the gateway's CortexAdmin API.

use anyhow::{Result, anyhow, bail};
use opni_metrics_proto::convert::wire_std_duration;
use opni_metrics_proto::cortexadmin::v1 as pb;
use serde_json::Value;

use super::connect::Connector;
use super::series::{answer, data, name, point, points, sample};
use super::{Output, QueryArgs, print_as, status_err, table, when};

/// Runs a query: instant, or range when `--start` is given.
pub(super) async fn run(conn: &Connector, q: QueryArgs, out: Output) -> Result<()> {
    let now = when::now()?;
    let range = match &q.start {
        Some(start) => {
            let start = when::parse("--start", start, now)?;
            let end = q.end.as_deref().map_or(Ok(now), |e| when::parse("--end", e, now))?;
            if end < start {
                bail!("--end ({end}) is before --start ({start})");
            }
            let step = match &q.step {
                Some(s) => super::duration("step", s)?,
                None => when::default_step(start, end),
            };
            if step.is_zero() {
                bail!("--step must be above zero");
            }
            Some((start, end, step))
        }
        None => None,
    };
    let time = q.time.as_deref().map(|t| when::parse("--time", t, now)).transpose()?;
    let mut c = conn.cortex_admin().await?;
    let bytes = match range {
        Some((start, end, step)) => {
            let req = pb::QueryRangeRequest {
                tenants: q.clusters,
                query: q.query,
                start: Some(when::wire(start)),
                end: Some(when::wire(end)),
                step: Some(wire_std_duration(step)),
            };
            c.query_range(req).await
        }
        None => c.query(pb::QueryRequest { tenants: q.clusters, query: q.query, time: time.map(when::wire) }).await,
    }
    .map_err(status_err)?
    .into_inner()
    .data;
    let result = data(answer(&bytes)?);
    match out {
        Output::Table => show(&result, q.points),
        _ => print_as(out, &result),
    }
}

/// Writes `data` (`{"resultType", "result"}`) as a table.
fn show(data: &Value, per_point: bool) -> Result<()> {
    let kind = data.get("resultType").and_then(Value::as_str).unwrap_or_default();
    let result = data.get("result").ok_or_else(|| anyhow!("the answer has no result"))?;
    let series = || result.as_array().map_or(&[][..], Vec::as_slice);
    let mut rows: Vec<Vec<String>> = Vec::new();
    match kind {
        "vector" => {
            rows.push(vec!["SERIES".into(), "TIME".into(), "VALUE".into()]);
            for s in series() {
                let (t, v) = point(s).map_or_else(|| ("-".into(), "-".into()), sample);
                rows.push(vec![name(&s["metric"]), t, v]);
            }
        }
        "matrix" if per_point => {
            rows.push(vec!["SERIES".into(), "TIME".into(), "VALUE".into()]);
            for s in series() {
                let n = name(&s["metric"]);
                for p in points(s) {
                    let (t, v) = sample(p);
                    rows.push(vec![n.clone(), t, v]);
                }
            }
        }
        "matrix" => {
            rows.push(vec!["SERIES".into(), "POINTS".into(), "LAST TIME".into(), "LAST VALUE".into()]);
            for s in series() {
                let ps = points(s);
                let (t, v) = ps.last().map_or_else(|| ("-".into(), "-".into()), sample);
                rows.push(vec![name(&s["metric"]), ps.len().to_string(), t, v]);
            }
        }
        "scalar" | "string" => {
            let (t, v) = sample(result);
            rows.push(vec!["TIME".into(), "VALUE".into()]);
            rows.push(vec![t, v]);
        }
        other => bail!("the answer has an unknown result type {other:?}; use -o json to see it"),
    }
    if rows.len() == 1 {
        eprintln!("no data");
        return Ok(());
    }
    table(&rows);
    Ok(())
}
