use super::*;

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn images() -> ImageMap {
    let mut m = ImageMap::new();
    m.insert("strata-broker".into(), PathBuf::from("/bin/broker"));
    m.insert("registry:5000/team/app".into(), PathBuf::from("/bin/app"));
    m
}

#[test]
fn images_resolve_exactly_or_without_tag_and_digest() {
    let m = images();
    assert_eq!(
        resolve_image(&m, "strata-broker").unwrap(),
        PathBuf::from("/bin/broker")
    );
    assert_eq!(
        resolve_image(&m, "strata-broker:0.1").unwrap(),
        PathBuf::from("/bin/broker")
    );
    assert_eq!(
        resolve_image(&m, "registry:5000/team/app:v2@sha256:abc").unwrap(),
        PathBuf::from("/bin/app")
    );
    let err = resolve_image(&m, "nginx:1").unwrap_err();
    assert_eq!(err.reason(), "ErrImageNotMapped");
    assert!(err.to_string().contains("strata-broker"), "{err}");
}

#[test]
fn args_naming_the_program_of_a_cmd_only_image_are_not_repeated() {
    let p = pod(serde_json::json!({
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"containers": [
            {"name": "a", "image": "strata-broker", "args": ["broker", "-v"]},
            {"name": "b", "image": "strata-broker", "args": ["serve", "-v"]},
            {"name": "c", "image": "strata-broker", "command": ["x", "run"], "args": ["-v"]},
        ]}
    }));
    let images = images();
    let empty = BTreeMap::new();
    let inp = PlanInputs {
        pod_ip: Ipv4Addr::new(127, 0, 0, 2),
        host_ip: Ipv4Addr::LOCALHOST,
        node_name: "n",
        images: &images,
        config_maps: &empty,
        secrets: &empty,
        sa_token: None,
        pod_dir: Path::new("/p"),
        data_root: Path::new("/d"),
        base_env: &[],
        api: None,
    };
    let plan = plan(&p, &inp).unwrap();
    let args: Vec<Vec<String>> = plan.containers.iter().map(|c| c.args.clone()).collect();
    assert_eq!(
        args,
        vec![vec!["-v"], vec!["serve", "-v"], vec!["run", "-v"]]
    );
}

#[test]
fn dollar_references_expand_like_the_kubelet() {
    let env = vec![
        ("A".to_string(), "1".to_string()),
        ("B".to_string(), "x".to_string()),
    ];
    assert_eq!(expand("$(A)-$(B)", &env), "1-x");
    assert_eq!(expand("$$(A) $(C) $5", &env), "$(A) $(C) $5");
    assert_eq!(expand("tail $(", &env), "tail $(");
}

#[test]
fn mount_paths_are_substituted_only_at_path_boundaries() {
    let mounts = vec![
        ("/etc/app/certs".to_string(), PathBuf::from("/h/certs")),
        ("/etc/app".to_string(), PathBuf::from("/h/app")),
    ];
    assert_eq!(
        substitute_mounts("--config=/etc/app/app.toml", &mounts),
        "--config=/h/app/app.toml"
    );
    assert_eq!(
        substitute_mounts("/etc/app/certs/ca.pem", &mounts),
        "/h/certs/ca.pem"
    );
    assert_eq!(
        substitute_mounts("/etc/application", &mounts),
        "/etc/application"
    );
    assert_eq!(substitute_mounts("/etc/app", &mounts), "/h/app");
}

#[test]
fn plans_env_volumes_argv_and_probes() {
    let p = pod(serde_json::json!({
        "metadata": {"name": "b-0", "namespace": "ns", "uid": "u1", "labels": {"app": "b"}},
        "spec": {
            "containers": [{
                "name": "broker", "image": "strata-broker:latest",
                "command": ["strata-broker"],
                "args": ["--data=/var/lib/strata", "--id=$(POD_NAME)", "--config=/etc/strata/broker.toml"],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
                    {"name": "MISSING", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}},
                    {"name": "ADDR", "value": "$(POD_IP):9092"},
                ],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/var/lib/strata"},
                    {"name": "config", "mountPath": "/etc/strata"},
                ],
                "ports": [{"name": "kafka", "containerPort": 9092}],
                "readinessProbe": {"tcpSocket": {"port": "kafka"}},
            }],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-b-0"}},
                {"name": "config", "configMap": {"name": "cfg", "items": [{"key": "toml", "path": "broker.toml"}]}},
            ],
        }
    }));
    let mut cms = BTreeMap::new();
    cms.insert(
        "cfg".to_string(),
        Data::from([
            ("level".to_string(), b"debug".to_vec()),
            ("toml".to_string(), b"x = 1".to_vec()),
        ]),
    );
    let images = images();
    let inp = PlanInputs {
        pod_ip: Ipv4Addr::new(127, 0, 0, 7),
        host_ip: Ipv4Addr::LOCALHOST,
        node_name: "n",
        images: &images,
        config_maps: &cms,
        secrets: &BTreeMap::new(),
        sa_token: None,
        pod_dir: Path::new("/k/pods/ns_b-0_u1"),
        data_root: Path::new("/k/data"),
        base_env: &[("PATH".to_string(), "/usr/bin".to_string())],
        api: None,
    };
    let plan = plan(&p, &inp).unwrap();
    assert!(plan.ignored.is_empty(), "{:?}", plan.ignored);
    let c = &plan.containers[0];
    assert_eq!(c.program, PathBuf::from("/bin/broker"));
    assert_eq!(
        c.args,
        vec![
            "--data=/k/data/ns/data-b-0",
            "--id=b-0",
            "--config=/k/pods/ns_b-0_u1/volumes/config/broker.toml"
        ]
    );
    let env: BTreeMap<_, _> = c.env.iter().cloned().collect();
    assert_eq!(env["POD_IP"], "127.0.0.7");
    assert_eq!(env["APP"], "b");
    assert_eq!(env["LEVEL"], "debug");
    assert_eq!(env["ADDR"], "127.0.0.7:9092");
    assert_eq!(env["HOSTNAME"], "b-0");
    assert_eq!(env["PATH"], "/usr/bin");
    assert!(!env.contains_key("MISSING"));
    assert_eq!(
        c.readiness.as_ref().unwrap().action,
        ProbeAction::Tcp { port: 9092 }
    );
    let config = plan.volumes.iter().find(|v| v.name == "config").unwrap();
    assert_eq!(
        config.files,
        vec![(PathBuf::from("broker.toml"), b"x = 1".to_vec())]
    );
}

#[test]
fn missing_config_and_unsupported_features_block_the_pod() {
    let base = |extra: serde_json::Value| {
        let mut spec = serde_json::json!({"containers": [{"name": "c", "image": "strata-broker"}]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        pod(serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}))
    };
    let images = images();
    let empty = BTreeMap::new();
    let inp = PlanInputs {
        pod_ip: Ipv4Addr::new(127, 0, 0, 2),
        host_ip: Ipv4Addr::LOCALHOST,
        node_name: "n",
        images: &images,
        config_maps: &empty,
        secrets: &empty,
        sa_token: None,
        pod_dir: Path::new("/p"),
        data_root: Path::new("/d"),
        base_env: &[],
        api: None,
    };
    let e = plan(
        &base(serde_json::json!({"volumes": [{"name": "v", "configMap": {"name": "gone"}}]})),
        &inp,
    );
    assert_eq!(e.unwrap_err(), PlanError::MissingConfigMap("gone".into()));
    let e = plan(
        &base(serde_json::json!({"initContainers": [{"name": "i", "image": "strata-broker"}]})),
        &inp,
    );
    assert!(matches!(e.unwrap_err(), PlanError::Unsupported(_)));
    let e = plan(
        &base(serde_json::json!({"volumes": [{"name": "v", "nfs": {"server": "s", "path": "/"}}]})),
        &inp,
    );
    assert!(matches!(e.unwrap_err(), PlanError::Unsupported(_)));
    let ok = plan(&base(serde_json::json!({"nodeSelector": {"a": "b"}})), &inp).unwrap();
    assert_eq!(ok.ignored, vec!["nodeSelector (single node)".to_string()]);
}
