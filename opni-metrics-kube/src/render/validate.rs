//! Checks of a [`MonitoringClusterSpec`] before anything is rendered; every error names the field.

use crate::crd::MonitoringClusterSpec;
use crate::crd::monitoring_cluster::{CortexSpec, GatewayRef, GrafanaSpec, TlsSpec};

use super::RenderError;
use super::retention::retention_period;
use super::storage;
use super::targets::{Plan, Target};

/// Flags the controller sets itself; `extraArgs` may not override them.
const RESERVED_FLAGS: [&str; 3] = ["target", "config.file", "config.expand-env"];

/// Checks `spec`. The Cortex part (and `spec.tls`) is checked only when Cortex is enabled, so a
/// broken Cortex spec can always be switched off; `spec.grafana` only when Grafana is enabled.
///
/// # Errors
/// [`RenderError::Invalid`] naming the first invalid field, e.g.
/// `spec.cortex.workloads.ingestr: unknown Cortex target`.
pub fn validate(spec: &MonitoringClusterSpec) -> Result<(), RenderError> {
    if spec.cortex.enabled {
        cortex(&spec.cortex)?;
        tls(&spec.tls)?;
    }
    if spec.grafana.enabled {
        grafana(&spec.grafana)?;
    }
    if spec.cortex.enabled || spec.grafana.enabled {
        gateway(&spec.gateway)?;
    }
    Ok(())
}

/// Checks `spec.cortex`, enabled or not.
pub(crate) fn cortex(cortex: &CortexSpec) -> Result<(), RenderError> {
    let plan = Plan::new(cortex)?;
    if let Some(image) = &cortex.image
        && (image.is_empty() || image.contains(char::is_whitespace))
    {
        return Err(RenderError::invalid("spec.cortex.image", "not an image reference"));
    }
    for (name, w) in &cortex.workloads {
        for (i, arg) in w.extra_args.iter().enumerate() {
            let field = || format!("spec.cortex.workloads.{name}.extraArgs[{i}]");
            let flag = arg.trim_start_matches('-');
            let flag = flag.split_once('=').map_or(flag, |(f, _)| f);
            if !arg.starts_with('-') {
                return Err(RenderError::invalid(field(), "a Cortex flag starting with `-`"));
            }
            if RESERVED_FLAGS.contains(&flag) {
                return Err(RenderError::invalid(field(), format!("-{flag} is set by the controller")));
            }
        }
        if let Some(size) = &w.storage_size
            && !is_quantity(size)
        {
            return Err(RenderError::invalid(
                format!("spec.cortex.workloads.{name}.storageSize"),
                "a positive Kubernetes quantity such as 10Gi",
            ));
        }
    }
    storage::validate(&cortex.config.storage, cortex.deployment_mode, plan.replicas(Target::All).unwrap_or(1))?;
    retention_period(&cortex.config.retention)
        .map_err(|reason| RenderError::invalid("spec.cortex.config.retention", reason))?;
    Ok(())
}

fn tls(tls: &TlsSpec) -> Result<(), RenderError> {
    if let Some(issuer) = &tls.issuer_ref {
        if issuer.name.is_empty() {
            return Err(RenderError::invalid("spec.tls.issuerRef.name", "must not be empty"));
        }
        if !matches!(issuer.kind.as_str(), "Issuer" | "ClusterIssuer") {
            return Err(RenderError::invalid("spec.tls.issuerRef.kind", "`Issuer` or `ClusterIssuer`"));
        }
    }
    Ok(())
}

fn grafana(grafana: &GrafanaSpec) -> Result<(), RenderError> {
    if let Some(host) = &grafana.hostname
        && !is_dns_name(host)
    {
        return Err(RenderError::invalid("spec.grafana.hostname", "a DNS name, without scheme, port or path"));
    }
    if grafana.version.as_deref().is_some_and(str::is_empty) {
        return Err(RenderError::invalid("spec.grafana.version", "must not be empty when set"));
    }
    Ok(())
}

fn gateway(gateway: &GatewayRef) -> Result<(), RenderError> {
    let name = &gateway.service_name;
    if name.len() > 63 || !is_dns_name(name) || name.contains('.') {
        return Err(RenderError::invalid("spec.gateway.serviceName", "a Service name (a DNS label)"));
    }
    if gateway.query_port == 0 {
        return Err(RenderError::invalid("spec.gateway.queryPort", "must not be 0"));
    }
    Ok(())
}

/// A lowercase RFC 1123 DNS name.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A positive decimal Kubernetes quantity, e.g. `10Gi`, `500M`, `1.5Ti`.
fn is_quantity(s: &str) -> bool {
    const SUFFIXES: [&str; 13] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E", ""];
    let Some(number) = SUFFIXES.iter().find_map(|suffix| s.strip_suffix(suffix)) else {
        return false;
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(int) && digits(frac) && number.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in ["10Gi", "1", "1.5Ti", "500M", "100k"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "Gi", "0Gi", "-1Gi", "10 Gi", "10GB", "1.Gi", ".5Gi", "10gi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_name("grafana.example.com"));
        for bad in ["", "https://grafana.example.com", "Grafana.example.com", "a..b", "-a.b", "a.b:443", "a/b"] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }
}
