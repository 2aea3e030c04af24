//! Signing in: OpenID Connect (authorization code with PKCE), API keys, and the admin token
//! from loopback. The sign-in forms carry a token that must match a cookie set with the form
//! (login CSRF: nobody can sign a victim into the attacker's account).

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::session::{LOGIN_COOKIE, random_token};
use super::*;

/// The cookie holding the sign-in forms' anti-forgery token.
const PRE_COOKIE: &str = "omc_pre";

/// PKCE's S256 challenge of `verifier`.
pub(crate) fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl Inner {
    pub(super) fn login_page(&self, ctx: &Ctx<'_>, error: Option<&str>) -> Reply {
        let Some(pre) = random_token(24) else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "no randomness available");
        };
        let oidc = self.settings.oidc_redirect_url.is_some() && self.readers.oidc_settings().is_some();
        let loopback = Self::peer_is_loopback(ctx.parts);
        let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
        let mut r = html(status, pages::login(&pre, oidc, loopback, error));
        set_header(&mut r, header::SET_COOKIE, &session::set_cookie(PRE_COOKIE, &pre, Duration::from_secs(3600)));
        r
    }

    fn pre_ok(ctx: &Ctx<'_>, form: &[u8]) -> bool {
        let given = form_value(form, "pre").unwrap_or_default();
        session::cookie(&ctx.parts.headers, PRE_COOKIE).is_some_and(|c| !c.is_empty() && session::same(c, &given))
    }

    pub(super) async fn login_key(&self, ctx: &Ctx<'_>, form: &[u8]) -> Reply {
        if !Self::pre_ok(ctx, form) {
            return self.login_page(ctx, Some("The sign-in form expired; try again."));
        }
        let key = form_value(form, "key").unwrap_or_default();
        match self.readers.api_key(&key).await {
            Ok(caller) => {
                let admin = self.is_admin(&caller);
                self.sign_in(User { name: caller.subject.clone(), caller: Some(caller), admin, method: "API key" })
            }
            Err(e) if e.is_unauthenticated() => {
                self.login_page(ctx, Some(&format!("That API key was not accepted: {e}.")))
            }
            Err(e) => self.login_page(ctx, Some(&format!("Signing in failed: {}", opni_metrics_core::error_chain(&e)))),
        }
    }

    pub(super) fn login_token(&self, ctx: &Ctx<'_>, form: &[u8]) -> Reply {
        if !Self::pre_ok(ctx, form) {
            return self.login_page(ctx, Some("The sign-in form expired; try again."));
        }
        let token = form_value(form, "token").unwrap_or_default();
        // the same check as for management calls: the token, from a loopback peer
        let mut probe = tonic::Request::new(());
        if let Ok(v) = format!("Bearer {}", token.trim()).parse() {
            probe.metadata_mut().insert("authorization", v);
        }
        let remote = ctx.parts.extensions.get::<RemotePeer>().map(|p| p.0);
        probe
            .extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo { local_addr: None, remote_addr: remote });
        if remote.is_none() {
            return self.login_page(ctx, Some("The admin token is accepted only from this machine (loopback)."));
        }
        match self.admin.authenticate(&probe) {
            Ok(()) => self.sign_in(User { name: "admin".into(), caller: None, admin: true, method: "admin token" }),
            Err(s) => self.login_page(ctx, Some(&format!("The admin token was not accepted: {}.", s.message()))),
        }
    }

    pub(super) async fn login_oidc(&self) -> Reply {
        let (Some(redirect_url), Some(oidc)) = (&self.settings.oidc_redirect_url, self.readers.oidc_settings()) else {
            return text(StatusCode::NOT_FOUND, "OpenID Connect sign-in is not configured");
        };
        let endpoints = match self.readers.login_endpoints().await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "OpenID Connect discovery failed");
                return text(StatusCode::BAD_GATEWAY, &format!("the identity provider cannot be reached: {e}"));
            }
        };
        let (Some(verifier), Some(nonce)) = (random_token(48), random_token(24)) else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "no randomness available");
        };
        let code_challenge = challenge(&verifier);
        let Some(state) = self.sessions.start_login(verifier, nonce.clone()) else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "no randomness available");
        };
        let mut scopes = vec!["openid".to_owned()];
        scopes.extend(self.settings.oidc_scopes.iter().cloned());
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &oidc.audience)
            .append_pair("redirect_uri", redirect_url)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &code_challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let sep = if endpoints.authorization.contains('?') { '&' } else { '?' };
        let mut r = redirect(&format!("{}{sep}{query}", endpoints.authorization));
        set_header(&mut r, header::SET_COOKIE, &session::set_cookie(LOGIN_COOKIE, &state, Duration::from_secs(600)));
        r
    }

    pub(super) async fn callback(&self, ctx: &Ctx<'_>) -> Reply {
        if let Some(e) = ctx.query("error") {
            let what = ctx.query("error_description").unwrap_or_default();
            return self.login_page(ctx, Some(&format!("The identity provider refused the sign-in: {e} {what}")));
        }
        let (Some(code), Some(state)) = (ctx.query("code"), ctx.query("state")) else {
            return self.login_page(ctx, Some("The identity provider's answer had no code."));
        };
        // the login must have started in this browser, and be used once
        let bound = session::cookie(&ctx.parts.headers, LOGIN_COOKIE).is_some_and(|c| session::same(c, &state));
        let pending = if bound { self.sessions.finish_login(&state) } else { None };
        let Some(pending) = pending else {
            return self.login_page(ctx, Some("That sign-in expired or was started elsewhere; sign in again."));
        };
        let (Some(redirect_url), Some(oidc)) = (&self.settings.oidc_redirect_url, self.readers.oidc_settings()) else {
            return text(StatusCode::NOT_FOUND, "OpenID Connect sign-in is not configured");
        };
        let client_id = oidc.audience.clone();
        let outcome = async {
            let endpoints = self.readers.login_endpoints().await?;
            let mut form = vec![
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect_url.as_str()),
                ("client_id", client_id.as_str()),
                ("code_verifier", pending.verifier.as_str()),
            ];
            if let Some(secret) = &self.settings.oidc_client_secret {
                form.push(("client_secret", secret.as_str()));
            }
            let answer = self.readers.token_request(&endpoints.token, &form).await?;
            let id_token = answer
                .get("id_token")
                .and_then(serde_json::Value::as_str)
                .ok_or("the token endpoint sent no id_token")?
                .to_owned();
            let (caller, claims) = self.readers.verify_id_token(&id_token).await.map_err(|e| e.to_string())?;
            let nonce = claims.get("nonce").and_then(serde_json::Value::as_str).unwrap_or_default();
            if !session::same(nonce, &pending.nonce) {
                return Err("the ID token's nonce does not match this sign-in".to_owned());
            }
            Ok::<_, String>(caller)
        }
        .await;
        match outcome {
            Ok(caller) => {
                let admin = self.is_admin(&caller);
                let mut r = self.sign_in(User {
                    name: caller.subject.clone(),
                    caller: Some(caller),
                    admin,
                    method: "OpenID Connect",
                });
                set_header(&mut r, header::SET_COOKIE, &session::set_cookie(LOGIN_COOKIE, "", Duration::ZERO));
                r
            }
            Err(e) => {
                tracing::info!(error = %e, "console sign-in failed");
                self.login_page(ctx, Some(&format!("Signing in failed: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_rfc7636_s256() {
        // RFC 7636, appendix B
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
