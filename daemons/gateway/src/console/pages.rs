//! The pages, rendered on the server (maud escapes every value).

use maud::{DOCTYPE, Markup, html};
use opni_metrics_core::node::NodeConfig;
use opni_metrics_proto::capability::v1::{NodeCapabilityStatus, TaskState, TaskStatus};
use opni_metrics_proto::common::v1::{Condition, ConditionKind, ConditionStatus, DisabledReason};
use opni_metrics_proto::cortexops::v1 as ops;

use super::actions::{Group, Row};
use super::ingest::Point;
use super::*;
use crate::rule_sync::RuleSyncStatus;

/// A join command made for a new cluster.
pub(crate) struct JoinCommand {
    pub(crate) cluster: String,
    pub(crate) command: String,
    pub(crate) minutes: i64,
}

/// The outcome of a dry run.
pub(crate) struct DryRun {
    pub(crate) findings: Vec<ops::ValidationError>,
    pub(crate) diff: Vec<(char, String)>,
}

/// One cluster on the rules page: the ruler's groups, and the last rule sync.
pub(crate) type ClusterRules = (ClusterId, Result<Vec<Group>, String>, Option<RuleSyncStatus>);

/// The charts of the ingestion page.
pub(crate) struct Ingestion {
    pub(crate) tenants: Vec<(ClusterId, Vec<Point>)>,
    pub(crate) error: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Clusters,
    Cortex,
    Ingestion,
    Rules,
    None,
}

fn layout(ctx: Option<&Ctx<'_>>, title: &str, nav: Nav, content: Markup) -> Markup {
    let user = ctx.and_then(Ctx::user);
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · opni-metrics console" }
                link rel="stylesheet" href="/console/static/app.css";
                script src="/console/static/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "opni-metrics" }
                    @if let Some(user) = user {
                        nav aria-label="Main" {
                            ul {
                                (nav_item("/console/", "Clusters", nav == Nav::Clusters))
                                @if user.admin { (nav_item("/console/cortex", "Cortex", nav == Nav::Cortex)) }
                                (nav_item("/console/ingestion", "Ingestion", nav == Nav::Ingestion))
                                (nav_item("/console/rules", "Rules", nav == Nav::Rules))
                            }
                        }
                        div.who {
                            span { (user.name) " · " (if user.admin { "admin" } else { "reader" }) " · " (user.method) }
                            button #theme type="button" aria-label="Switch between light and dark" { "Theme" }
                            form.inline method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(ctx.map_or("", Ctx::csrf));
                                button type="submit" { "Sign out" }
                            }
                        }
                    } @else {
                        div.who { button #theme type="button" aria-label="Switch between light and dark" { "Theme" } }
                    }
                }
                main #main tabindex="-1" { (content) }
            }
        }
    }
}

fn nav_item(href: &str, label: &str, current: bool) -> Markup {
    html! { li { a href=(href) aria-current=[current.then_some("page")] { (label) } } }
}

fn csrf_field(ctx: &Ctx<'_>) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf()); }
}

pub(crate) fn login(pre: &str, oidc: bool, loopback: bool, error: Option<&str>) -> Markup {
    layout(
        None,
        "Sign in",
        Nav::None,
        html! {
            h1 { "Sign in" }
            @if let Some(e) = error { p.flash.bad role="alert" { (e) } }
            @if oidc {
                div.card {
                    h2 { "With your organisation's account" }
                    p { a #oidc-login href="/console/login/oidc" { "Sign in with OpenID Connect" } }
                }
            }
            (secret_form("With an API key", "/console/login/key", "key", "API key ", pre))
            @if loopback {
                (secret_form("With the admin token (this machine only)", "/console/login/token", "token", "Admin token ", pre))
            }
        },
    )
}

/// A sign-in form for one secret (an API key, the admin token) named `field`.
fn secret_form(title: &str, action: &str, field: &str, label: &str, pre: &str) -> Markup {
    html! {
        div.card {
            h2 { (title) }
            form method="post" action=(action) {
                input type="hidden" name="pre" value=(pre);
                div.row {
                    label { (label) input id=(field) type="password" name=(field) autocomplete="off" required size="40"; }
                    button type="submit" { "Sign in" }
                }
            }
        }
    }
}

pub(crate) fn error(ctx: &Ctx<'_>, message: &str) -> Markup {
    layout(
        Some(ctx),
        "Error",
        Nav::None,
        html! { h1 { "Something is wrong" } p.flash.bad role="alert" { (message) } p { a href="/console/" { "Back to the clusters" } } },
    )
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

fn reason(r: i32) -> &'static str {
    match DisabledReason::try_from(r) {
        Ok(DisabledReason::CapabilityNotInstalled) => "capability not installed",
        Ok(DisabledReason::UninstallInProgress) => "uninstalling",
        Ok(DisabledReason::UpstreamNotInstalled) => "Cortex not installed",
        Ok(DisabledReason::UpstreamUnavailable) => "Cortex unavailable",
        _ => "unknown reason",
    }
}

fn task_state(t: &TaskStatus) -> &'static str {
    match TaskState::try_from(t.state) {
        Ok(TaskState::Pending) => "pending",
        Ok(TaskState::Running) => "running",
        Ok(TaskState::Completed) => "completed",
        Ok(TaskState::Failed) => "failed",
        Ok(TaskState::Canceled) => "cancelled",
        _ => "unknown",
    }
}

fn task_active(t: &TaskStatus) -> bool {
    matches!(TaskState::try_from(t.state), Ok(TaskState::Pending | TaskState::Running))
}

/// The capability's state in one word and its CSS class.
fn state(row: &Row) -> (String, &'static str) {
    if let Some(t) = row.task.as_ref().filter(|t| task_active(t)) {
        let p = t.progress.unwrap_or_default();
        return (format!("uninstalling ({}/{})", p.current, p.total), "warn");
    }
    match &row.status {
        Err(e) => (format!("unknown: {e}"), "bad"),
        Ok(s) if s.enabled => {
            let synced = !s.applied_digest.is_empty() && s.applied_digest == s.desired_digest;
            if synced { ("synced".into(), "ok") } else { ("syncing".into(), "warn") }
        }
        Ok(s) => {
            let why: Vec<&str> = s.disabled_reasons.iter().map(|r| reason(*r)).collect();
            let class = if why == ["capability not installed"] { "muted" } else { "bad" };
            (if why.is_empty() { "disabled".into() } else { why.join(", ") }, class)
        }
    }
}

fn condition(c: &Condition) -> Markup {
    let kind = match ConditionKind::try_from(c.kind) {
        Ok(ConditionKind::Applied) => "Applied",
        Ok(ConditionKind::PrometheusReady) => "PrometheusReady",
        Ok(ConditionKind::RemoteWriteHealthy) => "RemoteWriteHealthy",
        Ok(ConditionKind::Synced) => "Synced",
        Ok(ConditionKind::RulesSynced) => "RulesSynced",
        _ => "Unknown",
    };
    let (mark, class) = match ConditionStatus::try_from(c.status) {
        Ok(ConditionStatus::True) => ("✓", "ok"),
        Ok(ConditionStatus::False) => ("✗", "bad"),
        _ => ("?", "warn"),
    };
    html! { span class=(format!("badge {class}")) title=(format!("{} {}", c.reason, c.message)) { (mark) " " (kind) } " " }
}

fn last_sync(s: &NodeCapabilityStatus) -> String {
    s.last_sync.map_or_else(
        || "never".to_owned(),
        |t| {
            let ms = u64::try_from(t.seconds).unwrap_or(0) * 1000;
            let ago = crate::state::now().0.saturating_sub(ms) / 1000;
            format!("{ago} s ago")
        },
    )
}

pub(crate) fn cluster_rows(rows: &Result<Vec<Row>, String>) -> Markup {
    html! {
        @match rows {
            Err(e) => tr { td colspan="7" .bad { "Cannot list the clusters: " (e) } }
            Ok(rows) if rows.is_empty() => tr { td colspan="7" .muted { "No clusters to show." } }
            Ok(rows) => @for row in rows {
                @let (word, class) = state(row);
                tr data-cluster=(row.id) {
                    td { a href=(format!("/console/clusters/{}", row.id)) { (row.id) } }
                    td { @for (k, v) in &row.labels { code { (k) "=" (v) } " " } }
                    @match &row.status {
                        Ok(s) => {
                            td { @if s.connected { span.ok { "this replica" } } @else { span.muted { "not to this replica" } } }
                            td { span class=(class) data-state=(word) { (word) } }
                            td { (last_sync(s)) }
                            td { code { (short(&s.applied_digest)) } " / " code { (short(&s.desired_digest)) } }
                            td { @for c in &s.conditions { (condition(c)) } }
                        }
                        Err(_) => { td {} td { span class=(class) data-state=(word) { (word) } } td {} td {} td {} }
                    }
                }
            }
        }
    }
}

pub(crate) fn clusters(
    ctx: &Ctx<'_>,
    user: &User,
    selector: &str,
    rows: &Result<Vec<Row>, String>,
    join: Option<Result<JoinCommand, String>>,
) -> Markup {
    let live = format!(
        "/console/fragment/clusters?{}",
        form_urlencoded::Serializer::new(String::new()).append_pair("selector", selector).finish()
    );
    layout(
        Some(ctx),
        "Clusters",
        Nav::Clusters,
        html! {
            h1 { "Clusters" }
            @match &join {
                Some(Ok(j)) => div.card.flash.ok role="status" {
                    p { "Run this on cluster " code { (j.cluster) } " within " (j.minutes) " minutes (the token works once and is not shown again):" }
                    pre #join-command { (j.command) }
                    button type="button" data-copy="join-command" { "Copy" }
                }
                Some(Err(e)) => p.flash.bad role="alert" { (e) }
                None => {}
            }
            form.row method="get" action="/console/" role="search" {
                label { "Filter by label " input type="text" name="selector" value=(selector) placeholder="env=prod,team=a"; }
                button type="submit" { "Filter" }
            }
            p #clusters-status .live-status aria-live="polite" { "Live updates every 5 s" }
            div.table-wrap {
                table {
                    caption.muted { "Clusters you may see, with the metrics capability's state" }
                    thead { tr { th { "Cluster" } th { "Labels" } th { "Connected" } th { "Capability" } th { "Last sync" } th { "Applied / desired" } th { "Conditions" } } }
                    tbody #clusters data-live=(live) data-interval="5000" data-status="clusters-status" { (cluster_rows(rows)) }
                }
            }
            @if user.admin {
                h2 { "Add a cluster" }
                form.card method="post" action="/console/bootstrap" {
                    (csrf_field(ctx))
                    div.row {
                        label { "Cluster id " input #new-cluster type="text" name="cluster" required pattern="[a-z0-9][a-z0-9._-]*" size="24"; }
                        label { "Token valid for (minutes) " input type="number" name="ttl_minutes" value="60" min="1" max="1440"; }
                        button type="submit" { "Make a join command" }
                    }
                }
            }
        },
    )
}

pub(crate) fn cluster_state(row: &Row) -> Markup {
    let (word, class) = state(row);
    html! {
        dl {
            dt { "Capability" } dd { span class=(class) #cluster-state data-state=(word) { (word) } }
            @if let Ok(s) = &row.status {
                dt { "Connected" } dd { @if s.connected { "to this replica" } @else { "not to this replica" } }
                dt { "Last sync" } dd { (last_sync(s)) }
                dt { "Applied / desired digest" } dd { code { (short(&s.applied_digest)) } " / " code { (short(&s.desired_digest)) } }
                dt { "Conditions" } dd { @for c in &s.conditions { (condition(c)) } @if s.conditions.is_empty() { "none reported" } }
                @if let Some(r) = &s.rules {
                    dt { "Rules" } dd { (r.synced) " synced, " (r.refused) " refused, " (r.invalid) " invalid" }
                }
            }
        }
        @if let Some(t) = &row.task {
            @let p = t.progress.unwrap_or_default();
            h2 { "Uninstall task: " span #task-state data-state=(task_state(t)) { (task_state(t)) } }
            progress max=(p.total.max(1)) value=(p.current) aria-label="Uninstall progress" { (p.current) "/" (p.total) }
            ul { @for l in t.logs.iter().rev().take(8) { li { (l.msg) } } }
        }
    }
}

/// The outcome of the last action, if the link carrying it was made for this session.
fn flash(ctx: &Ctx<'_>) -> Markup {
    let signed = |level: &str| {
        let m = ctx.query(level)?;
        let sig = ctx.query("sig")?;
        session::same(&sig, &flash_sig(ctx.csrf(), level, &m)).then_some(m)
    };
    html! {
        @if let Some(m) = signed("ok") { p.flash.ok #flash role="status" { (m) } }
        @if let Some(m) = signed("bad") { p.flash.bad #flash role="alert" { (m) } }
    }
}

pub(crate) fn cluster(ctx: &Ctx<'_>, user: &User, row: &Row, desired: &Result<(NodeConfig, String), String>) -> Markup {
    let task_running = row.task.as_ref().is_some_and(task_active);
    let installed = row.status.as_ref().is_ok_and(|s| {
        s.enabled || s.disabled_reasons.iter().any(|r| *r != DisabledReason::CapabilityNotInstalled as i32)
    });
    layout(
        Some(ctx),
        row.id.as_str(),
        Nav::Clusters,
        html! {
            p { a href="/console/" { "← Clusters" } }
            h1 { "Cluster " (row.id) }
            (flash(ctx))
            p { @for (k, v) in &row.labels { code { (k) "=" (v) } " " } }
            p #cluster-status .live-status aria-live="polite" { "Live updates every 2 s" }
            div.card #cluster-live data-live=(format!("/console/fragment/cluster/{}", row.id)) data-interval="2000" data-status="cluster-status" { (cluster_state(row)) }
            @if user.admin {
                h2 { "Actions" }
                div.row {
                    @if !installed {
                        form method="post" action=(format!("/console/clusters/{}/install", row.id)) data-confirm=(format!("Install the metrics capability on {}?", row.id)) {
                            (csrf_field(ctx)) button #install type="submit" { "Install the capability" }
                        }
                    }
                    @if installed && !task_running {
                        form method="post" action=(format!("/console/clusters/{}/uninstall", row.id)) data-confirm=(format!("Uninstall the metrics capability from {}?", row.id)) {
                            (csrf_field(ctx))
                            label { input type="checkbox" name="delete_data"; "also delete its stored metrics" }
                            " "
                            label { "after (s) " input type="number" name="delay_seconds" value="0" min="0" max="86400" size="6"; }
                            " "
                            button.danger #uninstall type="submit" { "Uninstall" }
                        }
                    }
                    @if task_running {
                        form method="post" action=(format!("/console/clusters/{}/cancel", row.id)) data-confirm=(format!("Cancel the uninstall of {}?", row.id)) {
                            (csrf_field(ctx)) button #cancel type="submit" { "Cancel the uninstall" }
                        }
                    }
                }
            }
            h2 { "Node configuration" }
            @match desired {
                Ok((config, revision)) => {
                    p.muted { (revision) }
                    pre { (serde_saphyr::to_string(config).unwrap_or_default()) }
                }
                Err(e) => p.bad { "Cannot compute it: " (e) }
            }
        },
    )
}

/// An enum value's name in words: `NotConfigured` → "not configured".
fn spaced(v: impl std::fmt::Debug) -> String {
    let name = format!("{v:?}");
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out
}

fn workload_class(w: &ops::WorkloadStatus) -> &'static str {
    if w.ready { "ok" } else { "bad" }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn cortex(
    ctx: &Ctx<'_>,
    _user: &User,
    status: &Result<ops::InstallStatus, String>,
    active: &Result<ops::CapabilityBackendConfigSpec, String>,
    presets: &[ops::Preset],
    history: &Result<Vec<ops::HistoryEntry>, String>,
    edited: &str,
    outcome: Option<&Result<DryRun, String>>,
) -> Markup {
    layout(
        Some(ctx),
        "Cortex",
        Nav::Cortex,
        html! {
            h1 { "Cortex" }
            h2 { "Status" }
            @match status {
                Ok(s) => {
                    p {
                        "Configuration: " (spaced(ops::ConfigurationState::try_from(s.config_state).unwrap_or_default()))
                        " · installation: " (spaced(ops::InstallState::try_from(s.install_state).unwrap_or_default()))
                        " · application: " span #cortex-app { (spaced(ops::ApplicationState::try_from(s.app_state).unwrap_or_default())) }
                        @if !s.version.is_empty() { " · version " (s.version) }
                    }
                    @for w in &s.warnings { p.flash.warn { (w) } }
                    div.table-wrap { table {
                        thead { tr { th { "Workload" } th { "Kind" } th { "Ready" } th { "Message" } } }
                        tbody { @for w in &s.workloads { tr {
                            td { (w.name) } td { (w.kind) }
                            td { span class=(workload_class(w)) { (w.ready_replicas) "/" (w.desired_replicas) } }
                            td { (w.message) }
                        } } }
                    } }
                }
                Err(e) => p.flash.bad { "Cannot read the status: " (e) }
            }
            h2 { "Active configuration" }
            @match active {
                Ok(a) => p.muted { "Revision " (a.revision.unwrap_or(0)) "; secrets are shown redacted." }
                Err(e) => p.flash.bad { "Cannot read it: " (e) }
            }
            h2 { "Dry run an edit" }
            @if let Some(outcome) = outcome {
                @match outcome {
                    Err(e) => p.flash.bad #dry-run-result role="alert" { (e) }
                    Ok(d) if d.findings.iter().any(|f| f.severity == ops::Severity::Error as i32) => div.flash.bad #dry-run-result role="alert" {
                        p { "This configuration would be refused:" }
                        ul { @for f in &d.findings { li { code { (if f.field.is_empty() { "(whole configuration)" } else { f.field.as_str() }) } ": " (f.message) } } }
                    }
                    Ok(d) => div.flash.ok #dry-run-result role="status" {
                        p { "This configuration would be accepted." }
                        @if !d.findings.is_empty() { ul { @for f in &d.findings { li.warn { code { (f.field) } ": " (f.message) } } } }
                        pre { @for (m, l) in &d.diff { @if *m == '+' { span.diff-add { "+ " (l) } "\n" } @else if *m == '-' { span.diff-del { "- " (l) } "\n" } @else { "  " (l) "\n" } } }
                    }
                }
            }
            form method="post" action="/console/cortex/dry-run" {
                (csrf_field(ctx))
                label for="config" { "Configuration (YAML) — checked, never applied from here" }
                textarea #config name="config" spellcheck="false" { (edited) }
                p { button #dry-run type="submit" { "Dry run" } }
            }
            h2 { "Presets" }
            ul { @for p in presets { li { strong { (p.display_name) } " (" code { (p.id) } "): " (p.description) } } }
            h2 { "History" }
            @match history {
                Ok(entries) if entries.is_empty() => p.muted { "No revisions yet." }
                Ok(entries) => {
                    @let yaml: Vec<String> = entries.iter().map(|e| e.spec.as_ref().map(super::actions::spec_yaml).unwrap_or_default()).collect();
                    @for (i, e) in entries.iter().enumerate().rev() {
                        details.card {
                            summary { "Revision " (e.revision) @if e.reset { " (reset)" } @if let Some(t) = e.timestamp { " · " (t.seconds) " s since the epoch" } }
                            @let before = if i == 0 { "" } else { yaml[i - 1].as_str() };
                            pre { @for (m, l) in super::actions::line_diff(before, &yaml[i]) { @if m == '+' { span.diff-add { "+ " (l) } "\n" } @else if m == '-' { span.diff-del { "- " (l) } "\n" } @else { "  " (l) "\n" } } }
                        }
                    }
                }
                Err(e) => p.flash.bad { "Cannot read the history: " (e) }
            }
        },
    )
}

/// An SVG line chart of `values` (oldest first) over the last hour.
fn chart(label: &str, unit: &str, values: &[(i64, f64)]) -> Markup {
    let (w, h, pad) = (600.0_f64, 140.0_f64, 30.0_f64);
    let max = values.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max).max(1.0);
    let now = crate::state::now().0 as f64 / 1000.0;
    let xy: Vec<(f64, f64)> = values
        .iter()
        .map(|(t, v)| {
            let x = pad + (w - pad - 4.0) * (1.0 - ((now - *t as f64) / 3600.0).clamp(0.0, 1.0));
            let y = h - pad / 2.0 - (h - pad) * (v / max);
            (x, y)
        })
        .collect();
    let points: Vec<String> = xy.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let last = values.last().map_or_else(|| "no data yet".to_owned(), |(_, v)| format!("now {v:.1} {unit}"));
    html! {
        figure {
            figcaption { (label) " — " (last) }
            svg.chart viewBox=(format!("0 0 {w} {h}")) role="img" aria-label=(format!("{label}, last hour, {last}")) {
                line x1=(pad) y1=(h - pad / 2.0) x2=(w) y2=(h - pad / 2.0) {}
                text x="0" y="12" { (format!("{max:.0}")) }
                text x="0" y=(h - pad / 2.0) { "0" }
                text x=(pad) y=(h) { "−60 min" }
                text x=(w - 30.0) y=(h) { "now" }
                polyline points=(points.join(" ")) {}
                @if let Some((x, y)) = xy.last() { circle cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="4" {} }
            }
        }
    }
}

pub(crate) fn ingestion_charts(data: &Ingestion) -> Markup {
    html! {
        @if let Some(e) = &data.error { p.flash.warn { "Cortex statistics are unavailable: " (e) } }
        @if data.tenants.is_empty() { p.muted { "No clusters to show." } }
        @for (id, points) in &data.tenants {
            section.card data-tenant=(id) {
                h2 { (id) }
                @let rate: Vec<(i64, f64)> = points.iter().filter_map(|p| p.ingest_rate.map(|v| (p.at, v))).collect();
                @let series: Vec<(i64, f64)> = points.iter().filter_map(|p| p.series.map(|v| (p.at, v))).collect();
                @let fwd: Vec<(i64, f64)> = points.iter().filter_map(|p| p.forwarded_rate.map(|v| (p.at, v / 1024.0))).collect();
                div.row {
                    (chart("Samples/s ingested (Cortex)", "samples/s", &rate))
                    (chart("Active series (Cortex)", "series", &series))
                    (chart("KiB/s forwarded by this gateway", "KiB/s", &fwd))
                }
            }
        }
    }
}

pub(crate) fn ingestion(ctx: &Ctx<'_>, _user: &User, data: &Ingestion) -> Markup {
    layout(
        Some(ctx),
        "Ingestion",
        Nav::Ingestion,
        html! {
            h1 { "Ingestion" }
            p.muted { "Per tenant over the last hour, sampled every 30 s." }
            p #ingestion-status .live-status aria-live="polite" { "Live updates every 30 s" }
            div #ingestion data-live="/console/fragment/ingestion" data-interval="30000" data-status="ingestion-status" { (ingestion_charts(data)) }
        },
    )
}

pub(crate) fn rules(ctx: &Ctx<'_>, _user: &User, per: &[ClusterRules]) -> Markup {
    layout(
        Some(ctx),
        "Rules",
        Nav::Rules,
        html! {
            h1 { "Rules" }
            p.muted { "Groups in the namespace " code { (opni_metrics_core::rules::SYNCED_NAMESPACE) } " are synced from the cluster's own rules; the others were loaded by users." }
            @if per.is_empty() { p.muted { "No clusters to show." } }
            @for (id, groups, sync) in per {
                section.card data-tenant=(id) {
                    h2 { (id) }
                    @if let Some(s) = sync {
                        p { "Last rule sync: " (s.synced) " synced, " (s.refused) " refused, " (s.invalid) " invalid." }
                        @if !s.problems.is_empty() { ul { @for p in &s.problems { li.warn { code { (p.name) } ": " (p.message) } } } }
                    }
                    @match groups {
                        Err(e) => p.flash.bad { "Cannot list the ruler's groups: " (e) }
                        Ok(g) if g.is_empty() => p.muted { "The ruler holds no groups." }
                        Ok(g) => div.table-wrap { table {
                            thead { tr { th { "Kind" } th { "Namespace" } th { "Group" } th { "Rules" } th { "Health" } } }
                            tbody { @for gr in g { tr {
                                td { @if gr.namespace == opni_metrics_core::rules::SYNCED_NAMESPACE { "synced" } @else { "user" } }
                                td { code { (gr.namespace) } } td { code { (gr.name) } } td { (gr.rules) }
                                td { span class=(match gr.health.as_str() { "ok" => "ok", "err" => "bad", _ => "muted" }) { (gr.health) } }
                            } } }
                        } }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_page_offers_what_is_configured() {
        let all = login("pre", true, true, Some("<b>no</b>")).into_string();
        assert!(all.contains(r#"id="oidc-login""#) && all.contains(r#"id="token""#));
        assert!(all.contains("&lt;b&gt;no&lt;/b&gt;"), "an error message was not escaped");
        let keys_only = login("pre", false, false, None).into_string();
        assert!(!keys_only.contains("oidc-login") && !keys_only.contains(r#"id="token""#));
        assert!(keys_only.contains(r#"value="pre""#));
    }
}
