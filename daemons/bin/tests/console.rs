//! The admin console in a real browser: headless Chromium, driven over WebDriver, against a
//! gateway with two joined agents, the Cortex-semantics test upstream (real Prometheus receivers
//! behind it) and a test OpenID Connect provider. An admin signs in with OpenID Connect (authorization code + PKCE), sees both
//! clusters, installs the capability on one and watches it sync, starts and cancels an
//! uninstall, dry-runs an invalid Cortex edit, and looks at every page at 1280 and 390 px, light
//! and dark; a reader signed in with an API key bound to one cluster sees only that cluster and
//! cannot act. Screenshots go to `$CARGO_TARGET_DIR/console-screenshots/` and are checked for
//! content. The security headers, cookies and CSRF checks are asserted over plain HTTP too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{WAIT, agent_config, certs, gateway_config, start_agent, start_gateway};
use http::Method;
use opni_metrics_core::ClusterId;
use opni_metrics_core::access::{ApiKeyRecord, Role, RoleBinding, Subject};
use opni_metrics_core::registry::Cluster;
use opni_metrics_core::store::MemoryStore;
use opni_metrics_tests::http::send;
use opni_metrics_tests::oidc::Issuer;
use opni_metrics_tests::prometheus::free_port;
use opni_metrics_tests::webdriver::{Browser, Driver, png_colours, screenshot_dir};

const A: &str = "cluster-a";
const B: &str = "cluster-b";

/// Saves a screenshot named `name` and checks that it shows something.
async fn shot(b: &Browser, name: &str) {
    let path = screenshot_dir().join(format!("{name}.png"));
    let png = b.screenshot(&path).await.unwrap();
    let colours = png_colours(&png);
    assert!(colours > 20, "{name}: the screenshot looks blank ({colours} colours), see {}", path.display());
}

/// Milliseconds from navigation start to the load event of the current page.
async fn load_ms(b: &Browser) -> f64 {
    let v = b
        .execute(
            "const e = performance.getEntriesByType('navigation')[0]; return e ? e.loadEventEnd - e.startTime : -1;",
        )
        .await
        .unwrap();
    v.as_f64().unwrap_or(-1.0)
}

/// Waits until the text of `selector` contains `want`.
async fn wait_text(b: &Browser, selector: &str, want: &str) {
    b.wait_for(WAIT, &format!("{selector} shows {want:?}"), || async {
        let t = b.text_of(selector).await?;
        if t.contains(want) { Ok(()) } else { Err(format!("{selector} shows {t:?}")) }
    })
    .await
    .unwrap();
}

/// Clicks `selector` and accepts the confirmation it asks for.
async fn click_confirmed(b: &Browser, selector: &str) {
    let e = b.find(selector).await.unwrap();
    b.click(&e).await.unwrap();
    b.accept_dialog().await.unwrap();
}

async fn page_source(b: &Browser) -> String {
    b.execute("return document.documentElement.outerHTML;").await.unwrap().as_str().unwrap_or_default().to_owned()
}

/// Signs in over plain HTTP with an API key; the session cookie's `Set-Cookie` line.
async fn http_sign_in(base: &str, key: &str) -> String {
    let page = send(Method::GET, &format!("{base}/console/login"), &[], bytes::Bytes::new()).await.unwrap();
    let pre_cookie = page.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(pre_cookie.contains("HttpOnly") && pre_cookie.contains("Secure") && pre_cookie.contains("SameSite=Lax"));
    let pre = pre_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let form = format!("pre={pre}&key={key}");
    let cookie = format!("omc_pre={pre}");
    let r = send(
        Method::POST,
        &format!("{base}/console/login/key"),
        &[("content-type", "application/x-www-form-urlencoded"), ("cookie", &cookie)],
        form,
    )
    .await
    .unwrap();
    assert_eq!(r.status.as_u16(), 303, "{}", r.text());
    r.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let Some(driver) = Driver::start().await else { return };
    let certs = certs();
    let (cortex, _receivers) = common::cortex_with_receivers(&[A, B]).await;
    let issuer = Issuer::start().await;
    let query_port = free_port();
    let base = format!("http://127.0.0.1:{query_port}");

    let mut gc = gateway_config(&certs, &format!("{}/api/v1/push", cortex.url()));
    gc.query.listen = format!("127.0.0.1:{query_port}");
    gc.readers.oidc = Some(opni_metrics_daemons::config::readers::OidcConfig::new(&issuer.url(), "grafana"));
    gc.console.admins = vec!["group:platform".into()];
    gc.console.oidc_redirect_url = Some(format!("{base}/console/callback"));
    let mut plan = gc.validate().unwrap();
    plan.settings.console.sample_interval = Duration::from_secs(1);
    let gw = start_gateway(plan.settings, Arc::new(MemoryStore::default())).await;
    let state = gw.gateway.state().clone();
    for (id, env) in [(A, "prod"), (B, "dev")] {
        let mut c = Cluster::new(ClusterId::new(id).unwrap());
        c.set_labels([("env".to_owned(), env.to_owned())].into()).unwrap();
        if id == B {
            // B writes from the start; A gets the capability through the console below
            c.install(opni_metrics_core::CapabilityName::metrics(), opni_metrics_core::Timestamp(1)).unwrap();
        }
        state.create_cluster(&c).await.unwrap();
    }
    let agent_a = start_agent(&agent_config(&certs.pki.agent("agent-a", A), &gw.grpc_addr.to_string())).await;
    let agent_b = start_agent(&agent_config(&certs.pki.agent("agent-b", B), &gw.grpc_addr.to_string())).await;
    for id in [A, B] {
        let id = ClusterId::new(id).unwrap();
        opni_metrics_tests::http::eventually(WAIT, "both agents connected", || async {
            if gw.hub().is_connected(&id).await { Ok(()) } else { Err(format!("{id} not connected")) }
        })
        .await
        .unwrap();
    }
    // a reader who may read cluster A only, by API key
    state.create_role(&Role::new("a-only", [ClusterId::new(A).unwrap()], None).unwrap()).await.unwrap();
    state
        .create_role_binding(&RoleBinding::new("reader", "a-only", [Subject::user("apikey:reader").unwrap()]).unwrap())
        .await
        .unwrap();
    let (record, reader_key) =
        ApiKeyRecord::create("reader", None, [], [3; 8], [5; 32], opni_metrics_core::Timestamp(0)).unwrap();
    state.create_api_key(&record).await.unwrap();

    // --- the admin, through the identity provider ------------------------------------------------
    issuer.sign_in_as("ada", &["platform"]);
    let profile = tempfile::tempdir().unwrap();
    let b = driver.session(profile.path(), 1280, 900).await;
    b.goto(&format!("{base}/console/")).await.unwrap();
    assert!(b.url().await.unwrap().ends_with("/console/login"), "not sent to sign in");
    shot(&b, "login").await;
    let login = b.find("#oidc-login").await.unwrap();
    b.click(&login).await.unwrap();
    wait_text(&b, "header .who", "ada · admin · OpenID Connect").await;
    assert!(issuer.refused().is_empty(), "the provider refused: {:?}", issuer.refused());
    wait_text(&b, "#clusters", A).await;
    wait_text(&b, "#clusters", B).await;
    let clusters_ms = load_ms(&b).await;
    shot(&b, "clusters").await;
    // keyboard: the first Tab reaches the skip link
    b.keys("\u{e004}").await.unwrap();
    let focused = b.execute("return document.activeElement.className;").await.unwrap();
    assert_eq!(focused.as_str(), Some("skip"));
    // the label filter
    b.goto(&format!("{base}/console/?selector=env%3Ddev")).await.unwrap();
    let rows = b.text_of("#clusters").await.unwrap();
    assert!(rows.contains(B) && !rows.contains(A), "{rows}");

    // a new cluster's join command
    b.goto(&format!("{base}/console/")).await.unwrap();
    let new = b.find("#new-cluster").await.unwrap();
    b.type_into(&new, "cluster-c").await.unwrap();
    let make = b.find("form[action='/console/bootstrap'] button").await.unwrap();
    b.click(&make).await.unwrap();
    wait_text(&b, "#join-command", "--cluster-id cluster-c").await;
    assert!(b.text_of("#join-command").await.unwrap().contains("--bootstrap-token "));
    shot(&b, "join-command").await;

    // install on A and watch it sync (live updates, no reload)
    b.goto(&format!("{base}/console/clusters/{A}")).await.unwrap();
    wait_text(&b, "#cluster-state", "capability not installed").await;
    let cluster_ms = load_ms(&b).await;
    click_confirmed(&b, "#install").await;
    wait_text(&b, "#flash", "Installed").await;
    wait_text(&b, "#cluster-state", "synced").await;
    shot(&b, "cluster").await;

    // start an uninstall (delayed, so it can be cancelled) and cancel it
    b.execute("document.querySelector('input[name=delay_seconds]').value = '600';").await.unwrap();
    click_confirmed(&b, "#uninstall").await;
    wait_text(&b, "#flash", "Uninstall started.").await;
    wait_text(&b, "#task-state", "running").await;
    shot(&b, "uninstall-pending").await;
    click_confirmed(&b, "#cancel").await;
    wait_text(&b, "#flash", "Uninstall cancelled.").await;
    wait_text(&b, "#task-state", "cancelled").await;
    wait_text(&b, "#cluster-state", "synced").await;
    // without a session, a page sends the browser to sign in
    let no_session =
        send(Method::GET, &format!("{base}/console/clusters/{A}"), &[], bytes::Bytes::new()).await.unwrap();
    assert_eq!(no_session.status.as_u16(), 303);
    assert_eq!(no_session.headers.get("location").unwrap(), "/console/login");

    // the Cortex page: an invalid edit, dry-run, names the field
    b.goto(&format!("{base}/console/cortex")).await.unwrap();
    let cortex_ms = load_ms(&b).await;
    b.execute(
        "document.getElementById('config').value = 'grafana:\\n  enabled: true\\n  hostname: \"not a host!\"\\n';",
    )
    .await
    .unwrap();
    let dry = b.find("#dry-run").await.unwrap();
    b.click(&dry).await.unwrap();
    wait_text(&b, "#dry-run-result", "would be refused").await;
    assert!(b.text_of("#dry-run-result").await.unwrap().contains("grafana.hostname"));
    shot(&b, "cortex").await;

    // ingestion: samples pushed through both agents show in the charts
    for (agent, n) in [(&agent_a, 3), (&agent_b, 1)] {
        for i in 0..n {
            let ts = opni_metrics_tests::oidc::epoch_now() * 1000;
            let body =
                opni_metrics_tests::rw::encode(&opni_metrics_tests::rw::request(i * 50, 50, ts, "console_metric"));
            let r =
                opni_metrics_tests::http::push(&format!("http://{}/api/agent/push", agent.addr), body).await.unwrap();
            assert!(r.status.is_success(), "{r:?}");
        }
    }
    b.wait_for(WAIT, "the ingestion charts show Cortex's numbers", || async {
        b.goto(&format!("{base}/console/ingestion")).await?;
        let t = b.text_of("section[data-tenant='cluster-a']").await?;
        if t.contains("Active series (Cortex) — now 150") { Ok(()) } else { Err(t) }
    })
    .await
    .unwrap();
    let ingestion_ms = load_ms(&b).await;
    let fwd = b.text_of("section[data-tenant='cluster-a'] figure:nth-child(3) figcaption").await.unwrap();
    assert!(fwd.contains("KiB/s forwarded by this gateway — now"), "{fwd}");
    assert_eq!(b.find_all("section[data-tenant]").await.unwrap().len(), 2);
    shot(&b, "ingestion").await;
    // rules: a group the cluster's agent synced and one a user loaded, told apart
    for (ns, group) in [("opni-synced", "k8s:monitoring:node:node"), ("team", "mine")] {
        let yaml = format!("name: {group:?}\nrules:\n- record: job:up:sum\n  expr: sum(up)\n");
        let r = send(
            Method::POST,
            &format!("{}/api/v1/rules/{ns}", cortex.url()),
            &[("content-type", "application/yaml"), ("x-scope-orgid", A)],
            yaml,
        )
        .await
        .unwrap();
        assert!(r.status.is_success(), "{r:?}");
    }
    b.goto(&format!("{base}/console/rules")).await.unwrap();
    let rules = b.text_of("section[data-tenant='cluster-a']").await.unwrap();
    assert!(rules.contains("synced opni-synced k8s:monitoring:node:node"), "{rules}");
    assert!(rules.contains("user team mine"), "{rules}");
    let rules_ms = load_ms(&b).await;
    assert_eq!(b.find_all("section[data-tenant]").await.unwrap().len(), 2);
    shot(&b, "rules").await;

    // dark, and 390 px wide: nothing wider than the screen
    b.goto(&format!("{base}/console/")).await.unwrap();
    let theme = b.find("#theme").await.unwrap();
    b.click(&theme).await.unwrap();
    let bg = b.execute("return getComputedStyle(document.body).backgroundColor;").await.unwrap();
    assert_eq!(bg.as_str(), Some("rgb(17, 19, 23)"), "the dark theme did not apply");
    shot(&b, "clusters-dark").await;
    b.resize(390, 844).await.unwrap();
    b.goto(&format!("{base}/console/clusters/{A}")).await.unwrap();
    let width = b.execute("return document.documentElement.scrollWidth;").await.unwrap().as_f64().unwrap();
    let inner = b.execute("return window.innerWidth;").await.unwrap().as_f64().unwrap();
    assert!(width <= inner + 1.0, "the page is {width} px wide in a {inner} px window");
    shot(&b, "cluster-390-dark").await;
    let html = page_source(&b).await;
    assert!(!html.contains(&gw.admin_token) && !html.contains(&reader_key), "a secret was rendered");
    b.resize(1280, 900).await.unwrap();
    let out = b.find("form[action='/console/logout'] button").await.unwrap();
    b.click(&out).await.unwrap();
    wait_text(&b, "h1", "Sign in").await;
    b.quit().await;

    // --- a reader with an API key bound to cluster A ---------------------------------------------
    let profile = tempfile::tempdir().unwrap();
    let r = driver.session(profile.path(), 1280, 900).await;
    r.goto(&format!("{base}/console/login")).await.unwrap();
    let key = r.find("#key").await.unwrap();
    r.type_into(&key, &reader_key).await.unwrap();
    let submit = r.find("form[action='/console/login/key'] button").await.unwrap();
    r.click(&submit).await.unwrap();
    wait_text(&r, "header .who", "apikey:reader · reader").await;
    wait_text(&r, "#clusters", A).await;
    assert!(!r.text_of("#clusters").await.unwrap().contains(B), "the reader sees cluster B");
    shot(&r, "reader-clusters").await;
    assert!(r.find_all("a[href='/console/cortex']").await.unwrap().is_empty());
    r.goto(&format!("{base}/console/clusters/{B}")).await.unwrap();
    wait_text(&r, "main", "no such cluster, or you may not see it").await;
    r.goto(&format!("{base}/console/clusters/{A}")).await.unwrap();
    wait_text(&r, "#cluster-state", "synced").await;
    assert!(r.find_all("#install, #uninstall, #cancel").await.unwrap().is_empty(), "a reader is offered actions");
    r.goto(&format!("{base}/console/ingestion")).await.unwrap();
    assert_eq!(r.find_all("section[data-tenant]").await.unwrap().len(), 1);
    r.quit().await;

    // --- security, over plain HTTP ---------------------------------------------------------------
    let page = send(Method::GET, &format!("{base}/console/login"), &[], bytes::Bytes::new()).await.unwrap();
    let csp = page.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers.get("x-content-type-options").unwrap(), "nosniff");
    // an OpenID Connect answer for a sign-in this browser did not start is refused
    let forged =
        send(Method::GET, &format!("{base}/console/callback?code=c&state=s"), &[], bytes::Bytes::new()).await.unwrap();
    assert_eq!(forged.status.as_u16(), 401);
    assert!(forged.text().contains("started elsewhere"), "{}", forged.text());
    assert!(forged.headers.get_all("set-cookie").iter().all(|c| !c.to_str().unwrap().starts_with("omc_session=")));
    let session = http_sign_in(&base, &reader_key).await;
    assert!(
        session.contains("HttpOnly") && session.contains("Secure") && session.contains("SameSite=Lax"),
        "{session}"
    );
    let cookie = session.split(';').next().unwrap().to_owned();
    // a POST without the session's CSRF token is refused and changes nothing
    for form in ["", "csrf=forged"] {
        let r = send(
            Method::POST,
            &format!("{base}/console/logout"),
            &[("content-type", "application/x-www-form-urlencoded"), ("cookie", &cookie)],
            form,
        )
        .await
        .unwrap();
        assert_eq!(r.status.as_u16(), 403, "{}", r.text());
    }
    let still =
        send(Method::GET, &format!("{base}/console/"), &[("cookie", &cookie)], bytes::Bytes::new()).await.unwrap();
    assert_eq!(still.status.as_u16(), 200, "the forged logout ended the session");
    // a reader's POST, even with a token, is not an admin's
    let uninstalled_by_reader = send(
        Method::POST,
        &format!("{base}/console/clusters/{A}/uninstall"),
        &[("content-type", "application/x-www-form-urlencoded"), ("cookie", &cookie)],
        "csrf=x",
    )
    .await
    .unwrap();
    assert_eq!(uninstalled_by_reader.status.as_u16(), 403);

    println!(
        "console page load times (ms): clusters {clusters_ms:.0}, cluster {cluster_ms:.0}, cortex {cortex_ms:.0}, ingestion {ingestion_ms:.0}, rules {rules_ms:.0}"
    );
    drop((agent_a, agent_b));
    gw.shutdown().await;
}
