#![allow(clippy::unwrap_used)]
use super::config::endpoint_url;
use super::*;

#[test]
fn prefix_end_is_the_next_key() {
    assert_eq!(prefix_end(b"/a/"), Bytes::from_static(b"/a0"));
    assert_eq!(prefix_end(b"a\xff\xff"), Bytes::from_static(b"b"));
    assert_eq!(prefix_end(b"\xff"), Bytes::from_static(b"\0"));
}

#[test]
fn endpoints_get_the_scheme_tls_implies() {
    assert_eq!(endpoint_url("10.0.0.1:2379", false).unwrap(), "http://10.0.0.1:2379");
    assert_eq!(endpoint_url("etcd:2379", true).unwrap(), "https://etcd:2379");
    assert_eq!(endpoint_url("https://etcd:2379", false).unwrap(), "https://etcd:2379");
    assert!(endpoint_url("http://etcd:2379", true).is_err());
    assert!(endpoint_url("unix:///run/etcd.sock", false).is_err());
    assert!(endpoint_url("http://etcd:2379/v3", false).is_err());
}

#[test]
fn keys_outside_the_prefix_are_corrupt() {
    let keys = Keys { prefix: Arc::from("/p/") };
    assert_eq!(keys.strip(b"/p/a/b").unwrap(), "a/b");
    assert!(matches!(keys.strip(b"/q/a"), Err(StoreError::Corrupt { .. })));
    assert!(matches!(keys.strip(b"/p/\xff"), Err(StoreError::Corrupt { .. })));
}

#[tokio::test]
async fn tls_files_are_read_at_build_naming_the_path() {
    let cfg = EtcdConfig {
        endpoints: vec!["etcd:2379".to_owned()],
        prefix: config::default_prefix(),
        tls: Some(EtcdTls { ca: Some("/nonexistent/ca.pem".into()), ..EtcdTls::default() }),
    };
    let err = EtcdStore::new(&cfg).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}
