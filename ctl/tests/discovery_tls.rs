//! `--discovery-srv` with `--insecure-discovery=false`: etcdctl 3.4 checks
//! every server's certificate against the SRV domain (its `secureCfg.serverName`
//! becomes `tls.Config.ServerName`), not against the host it dials. A member
//! whose certificate names only the domain is reached at 127.0.0.1 this way,
//! and refused without it. (The DNS lookup itself is `discovery`'s unit tests'.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Etcd, TlsFiles, require_reference_tools};
use concord_ctl::client::{Client, ClientConfig, MAX_RECV_MSG_SIZE, Retry};
use concord_proto::etcdserverpb as pb;
use std::time::Duration;

const DOMAIN: &str = "discovery.concord.test";

async fn get(endpoint: &str, tls: &TlsFiles, server_name: Option<&str>) -> Result<(), String> {
    let config = ClientConfig {
        endpoints: vec![endpoint.to_owned()],
        dial_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(3),
        keepalive_time: Duration::from_secs(2),
        keepalive_timeout: Duration::from_secs(6),
        credentials: None,
        tls: concord_ctl::tls::settings(Some(&tls.ca), None, None, server_name, true, false),
        prelude: Default::default(),
    };
    let client = Client::connect(&config).await.map_err(|e| e.message)?;
    let req = pb::RangeRequest {
        key: b"k".to_vec(),
        ..Default::default()
    };
    client
        .call(Retry::NonRepeatable, req, |c, r| async move {
            pb::kv_client::KvClient::new(c)
                .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                .range(r)
                .await
        })
        .await
        .map(|_| ())
        .map_err(|e| e.message)
}

#[tokio::test]
async fn the_srv_domain_is_the_tls_server_name() {
    require_reference_tools();
    let tls = TlsFiles::generate_for(&[DOMAIN], false).unwrap();
    let etcd = Etcd::start_tls(&tls, false);
    let endpoint = format!("https://{}", etcd.endpoint());
    get(&endpoint, &tls, Some(DOMAIN)).await.unwrap();
    // Without it the certificate (no 127.0.0.1 in it) does not match the host.
    let refused = get(&endpoint, &tls, None).await;
    assert!(refused.is_err(), "{refused:?}");
}
