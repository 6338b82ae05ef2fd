//! The S3 server the harness starts is a real S3 endpoint: the object_store
//! client (the one the broker's tier uses) can write, read ranges, list and
//! do create-if-absent puts with the printed credentials.

use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use strata_e2e::binaries::Binaries;
use strata_e2e::s3::S3Server;
use strata_e2e::testing;

#[tokio::test]
async fn seaweedfs_serves_s3_with_the_generated_credentials() {
    if !testing::binaries_present("s3 smoke test", &["weed"]) {
        return;
    }
    let bins = Binaries::from_env();
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let run = async {
        let server = S3Server::start(&bins, dir.path(), "strata")
            .await
            .expect("starting SeaweedFS");
        eprintln!(
            "S3 up in {:?} at {}",
            started.elapsed(),
            server.info.endpoint
        );
        let i = &server.info;
        let store = AmazonS3Builder::new()
            .with_endpoint(&i.endpoint)
            .with_bucket_name(&i.bucket)
            .with_access_key_id(&i.access_key)
            .with_secret_access_key(&i.secret_key)
            .with_region(&i.region)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .expect("client");
        let path = Path::from("topics/t/0/00000000000000000000.log");
        let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        store
            .put(&path, PutPayload::from(data.clone()))
            .await
            .expect("put");
        let got = store
            .get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        assert_eq!(got.as_ref(), &data[..]);
        let range = store
            .get_range(&path, 1000..1010)
            .await
            .expect("ranged get");
        assert_eq!(range.as_ref(), &data[1000..1010]);
        let again = store
            .put_opts(
                &path,
                PutPayload::from(vec![1u8]),
                PutOptions::from(PutMode::Create),
            )
            .await;
        assert!(
            matches!(again, Err(object_store::Error::AlreadyExists { .. })),
            "create-if-absent must refuse to overwrite: {again:?}"
        );
        let listed: Vec<_> = {
            use futures::TryStreamExt;
            store
                .list(Some(&Path::from("topics")))
                .try_collect()
                .await
                .expect("list")
        };
        assert_eq!(listed.len(), 1);
        drop(server);
    };
    tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("S3 smoke test timed out");
    eprintln!("S3 smoke test done in {:?}", started.elapsed());
}
