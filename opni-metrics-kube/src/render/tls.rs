//! cert-manager objects for mutual TLS between the gateway and Cortex, and inside Cortex.
//!
//! Without `spec.tls.issuerRef` the cluster gets its own CA: a self-signed `Issuer`
//! `<mc>-selfsigned` signs the CA `Certificate` `<mc>-ca` (Secret `<mc>-ca`), and the CA `Issuer`
//! `<mc>-ca` signs the leaves. The CA keeps its key on renewal (`rotationPolicy: Never`) so
//! certificates it signed before stay valid; the leaves rotate theirs.
//!
//! Leaves (ECDSA P-256, 90 days, renewed 15 days before expiry):
//! - `<mc>-cortex-serving`: every Cortex pod's server certificate and, as Cortex components call
//!   each other with mutual TLS too, their client certificate; it names every Cortex Service.
//! - `<mc>-gateway-client`: the gateway's client certificate for calling Cortex, whose Secret
//!   also carries the CA (`ca.crt`) to verify Cortex with.
//!
//! The Secrets cert-manager writes carry none of our labels, so pruning never touches them.

use crate::crd::cert_manager::{
    CaIssuer, Certificate, CertificateSpec, Issuer, IssuerSpec, ObjectIssuerRef, PrivateKey,
};

use super::meta::{App, Ctx, desired};
use super::services::SvcSpec;
use super::{DesiredObject, ObjectKind, RenderError};

const CERT_MANAGER_GROUP: &str = "cert-manager.io";
const LEAF_DURATION: &str = "2160h";
const LEAF_RENEW_BEFORE: &str = "360h";
const CA_DURATION: &str = "87600h";
const CA_RENEW_BEFORE: &str = "720h";

fn ecdsa(rotation: &str) -> Option<PrivateKey> {
    Some(PrivateKey { algorithm: "ECDSA".to_owned(), size: Some(256), rotation_policy: Some(rotation.to_owned()) })
}

fn usages(list: &[&str]) -> Vec<String> {
    list.iter().map(|&u| u.to_owned()).collect()
}

/// Every DNS name a client may use for `services`: `<svc>.<ns>.svc` and the
/// `.svc.cluster.local` form, plus the per-pod wildcards of headless Services.
pub(crate) fn dns_names(ctx: &Ctx<'_>, services: &[SvcSpec]) -> Vec<String> {
    let names = &ctx.names;
    let mut out = Vec::new();
    for svc in services {
        let (host, fqdn) = (names.host(&svc.name), names.fqdn(&svc.name));
        if svc.is_headless() {
            out.push(format!("*.{host}"));
            out.push(format!("*.{fqdn}"));
        }
        out.push(host);
        out.push(fqdn);
    }
    out.sort();
    out.dedup();
    out
}

/// The Issuers and Certificates for the Cortex `services`.
pub(crate) fn render(ctx: &Ctx<'_>, services: &[SvcSpec]) -> Result<Vec<DesiredObject>, RenderError> {
    let names = &ctx.names;
    let labels = || ctx.labels(App::Cortex, None);
    let issuer = |name: String, spec: IssuerSpec| {
        let mut i = Issuer::new(&name, spec);
        i.metadata = ctx.meta(name, labels());
        desired(ObjectKind::Issuer, &i)
    };
    let certificate = |name: String, spec: CertificateSpec| {
        let mut c = Certificate::new(&name, spec);
        c.metadata = ctx.meta(name, labels());
        desired(ObjectKind::Certificate, &c)
    };

    let mut out = Vec::new();
    let leaf_issuer = match &ctx.spec.tls.issuer_ref {
        Some(r) => ObjectIssuerRef { name: r.name.clone(), kind: r.kind.clone(), group: CERT_MANAGER_GROUP.to_owned() },
        None => {
            out.push(issuer(
                names.selfsigned_issuer(),
                IssuerSpec { self_signed: Some(serde_json::Map::new()), ca: None },
            )?);
            out.push(certificate(
                names.ca(),
                CertificateSpec {
                    secret_name: names.ca(),
                    common_name: Some(names.ca()),
                    is_ca: true,
                    usages: usages(&["cert sign", "crl sign", "digital signature"]),
                    duration: Some(CA_DURATION.to_owned()),
                    renew_before: Some(CA_RENEW_BEFORE.to_owned()),
                    private_key: ecdsa("Never"),
                    issuer_ref: ObjectIssuerRef {
                        name: names.selfsigned_issuer(),
                        kind: "Issuer".to_owned(),
                        group: CERT_MANAGER_GROUP.to_owned(),
                    },
                    ..CertificateSpec::default()
                },
            )?);
            out.push(issuer(
                names.ca(),
                IssuerSpec { self_signed: None, ca: Some(CaIssuer { secret_name: names.ca() }) },
            )?);
            ObjectIssuerRef { name: names.ca(), kind: "Issuer".to_owned(), group: CERT_MANAGER_GROUP.to_owned() }
        }
    };

    out.push(certificate(
        names.serving_cert(),
        CertificateSpec {
            secret_name: names.serving_cert(),
            dns_names: dns_names(ctx, services),
            usages: usages(&["digital signature", "server auth", "client auth"]),
            duration: Some(LEAF_DURATION.to_owned()),
            renew_before: Some(LEAF_RENEW_BEFORE.to_owned()),
            private_key: ecdsa("Always"),
            issuer_ref: leaf_issuer.clone(),
            ..CertificateSpec::default()
        },
    )?);
    out.push(certificate(
        names.gateway_client_cert(),
        CertificateSpec {
            secret_name: names.gateway_client_cert(),
            common_name: Some(ctx.spec.gateway.service_name.clone()),
            usages: usages(&["digital signature", "client auth"]),
            duration: Some(LEAF_DURATION.to_owned()),
            renew_before: Some(LEAF_RENEW_BEFORE.to_owned()),
            private_key: ecdsa("Always"),
            issuer_ref: leaf_issuer,
            ..CertificateSpec::default()
        },
    )?);
    Ok(out)
}
