//! The deployment files — the container image (`Dockerfile`, `.dockerignore`), the compose fleet
//! (`compose.yaml`, `deploy/Caddyfile`), the Kubernetes manifests (`deploy/kustomization.yaml`,
//! `deploy/kubernetes/`) and the fleet's agents file (`deploy/agents.toml`) — read as files and
//! checked for the facts a fleet depends on: two gateways and PostgreSQL behind one load
//! balancer; probes on `/readyz` and `/healthz` at the container's port; a grace period longer
//! than the preStop sleep plus the drain; the agents file mounted as a directory, so edits reach
//! running gateways; a stripped binary run by a non-root user; and a build context that holds
//! everything the image copies. No container runtime or cluster is needed.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use switchboard::config::{self, DEFAULT_DRAIN_SECONDS};
use switchboard::server::SHUTDOWN_GRACE;
use switchboard_tests::{temp_dir, workspace_root};
use yaml_rust2::{Yaml, YamlLoader};

/// Where the image and the Kubernetes manifests put the agents file.
const CONFIG_DIR: &str = "/etc/switchboard";

/// The gateway's binary in the image.
const BINARY: &str = "/usr/local/bin/switchboard";

/// A file of the repository, by its path from the root.
fn read(path: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(workspace_root().join(path)).with_context(|| format!("reading {path}"))
}

/// Every YAML file the fleet is deployed from — `compose.yaml` and each `.yaml`/`.yml` under
/// `deploy/` — parsed, with compose's `<<` merge keys applied: (path from the root, documents).
fn yaml_files() -> anyhow::Result<Vec<(String, Vec<Yaml>)>> {
    let root = workspace_root();
    let mut paths = vec![root.join("compose.yaml")];
    collect_yaml(&root.join("deploy"), &mut paths)?;
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let name = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {name}"))?;
            let docs = YamlLoader::load_from_str(&text)
                .with_context(|| format!("{name}: not YAML"))?
                .into_iter()
                .map(apply_merge_keys)
                .collect::<Vec<_>>();
            ensure!(
                !docs.is_empty() && docs.iter().all(|d| d.as_hash().is_some()),
                "{name}: every document should be a mapping"
            );
            Ok((name, docs))
        })
        .collect()
}

/// Appends the YAML files under `dir` (recursively) to `out`.
fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// `yaml` with every `<<: *anchor` merged into its mapping (keys written beside it win), as
/// compose reads it. yaml-rust2 expands aliases but leaves merge keys as plain keys.
fn apply_merge_keys(yaml: Yaml) -> Yaml {
    match yaml {
        Yaml::Array(items) => Yaml::Array(items.into_iter().map(apply_merge_keys).collect()),
        Yaml::Hash(hash) => {
            let merge = Yaml::String("<<".into());
            let mut out = yaml_rust2::yaml::Hash::new();
            let mut merged = Vec::new();
            for (key, value) in hash {
                if key == merge {
                    match value {
                        Yaml::Array(many) => merged.extend(many),
                        one => merged.push(one),
                    }
                } else {
                    out.insert(key, apply_merge_keys(value));
                }
            }
            for source in merged {
                if let Yaml::Hash(source) = apply_merge_keys(source) {
                    for (key, value) in source {
                        out.entry(key).or_insert(value);
                    }
                }
            }
            Yaml::Hash(out)
        }
        other => other,
    }
}

/// The Kubernetes objects under `deploy/` (every document with a `kind`, but the kustomization
/// itself, which only kustomize reads): (file, object).
fn k8s_objects() -> anyhow::Result<Vec<(String, Yaml)>> {
    Ok(yaml_files()?
        .into_iter()
        .filter(|(name, _)| name.starts_with("deploy/"))
        .flat_map(|(name, docs)| docs.into_iter().map(move |doc| (name.clone(), doc)))
        .filter(|(_, doc)| doc["kind"].as_str().is_some_and(|k| k != "Kustomization"))
        .collect())
}

/// The one Kubernetes object of `kind` under `deploy/`, outside the templates (`*.example.yaml`).
fn one_of_kind(kind: &str) -> anyhow::Result<Yaml> {
    let mut found: Vec<_> = k8s_objects()?
        .into_iter()
        .filter(|(name, doc)| doc["kind"].as_str() == Some(kind) && !name.contains(".example."))
        .collect();
    ensure!(
        found.len() == 1,
        "expected one {kind} under deploy/, found {}",
        found.len()
    );
    Ok(found.remove(0).1)
}

/// `deploy/kustomization.yaml`.
fn kustomization() -> anyhow::Result<Yaml> {
    yaml_files()?
        .into_iter()
        .find(|(name, _)| name == "deploy/kustomization.yaml")
        .and_then(|(_, mut docs)| docs.pop())
        .context("deploy/kustomization.yaml is missing")
}

/// The Deployment's one container: the gateway.
fn gateway_container(deployment: &Yaml) -> anyhow::Result<&Yaml> {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_vec()
        .context("Deployment: no containers")?;
    ensure!(
        containers.len() == 1,
        "Deployment: expected one container, found {}",
        containers.len()
    );
    Ok(&containers[0])
}

/// The container port a probe's or a Service's `port` names: a number, or a port's name.
fn resolve_port(container: &Yaml, port: &Yaml) -> Option<i64> {
    if let Some(n) = port.as_i64() {
        return Some(n);
    }
    let name = port.as_str()?;
    container["ports"]
        .as_vec()?
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_i64())
}

/// `deploy/agents.toml`, the fleet's agents file, as a TOML table.
fn fleet_agents() -> anyhow::Result<toml::Table> {
    read("deploy/agents.toml")?
        .parse()
        .context("deploy/agents.toml: not TOML")
}

/// The `[server] drain_seconds` of an agents file (the gateway's default when absent).
fn drain_seconds(agents: &toml::Table) -> u64 {
    agents
        .get("server")
        .and_then(|s| s.get("drain_seconds"))
        .and_then(toml::Value::as_integer)
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(DEFAULT_DRAIN_SECONDS)
}

/// The port of `[server] listen` in an agents file.
fn listen_port(agents: &toml::Table) -> anyhow::Result<i64> {
    let listen = agents
        .get("server")
        .and_then(|s| s.get("listen"))
        .and_then(toml::Value::as_str)
        .context("deploy/agents.toml: no [server] listen")?;
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("deploy/agents.toml: listen {listen:?}"))?;
    ensure!(
        addr.ip().is_unspecified(),
        "deploy/agents.toml: listen {listen} is unreachable from outside the container"
    );
    Ok(i64::from(addr.port()))
}

/// The `path` of each table of `[section]` (`plugins`, `lookups`) of an agents file: (name,
/// path), in the file's order.
fn section_paths(agents: &toml::Table, section: &str) -> Vec<(String, String)> {
    agents
        .get(section)
        .and_then(toml::Value::as_table)
        .into_iter()
        .flatten()
        .map(|(name, table)| {
            let path = table.get("path").and_then(toml::Value::as_str);
            (name.clone(), path.unwrap_or_default().to_string())
        })
        .collect()
}

/// Seconds of a compose duration such as `135s`, `2m15s` or `1h`.
fn compose_seconds(text: &str) -> Option<u64> {
    let mut total = 0;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
    }
    number.is_empty().then_some(total)
}

/// One instruction of the Dockerfile, its continuation lines joined.
#[derive(Debug)]
struct Instruction {
    /// `FROM`, `RUN`, `COPY`… in upper case.
    keyword: String,
    /// The rest of the instruction.
    args: String,
}

/// A build stage: `FROM base [AS name]` and what follows it.
#[derive(Debug)]
struct Stage {
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    /// The instructions with this keyword.
    fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }
}

/// The Dockerfile's stages, in order; instructions before the first `FROM` (global `ARG`s) are
/// in a stage named `(global)`.
fn dockerfile() -> anyhow::Result<Vec<Stage>> {
    let text = read("Dockerfile")?;
    let mut stages = vec![Stage {
        name: Some("(global)".into()),
        instructions: Vec::new(),
    }];
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comment lines are dropped, inside a continued instruction too (as Docker does).
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let whole = std::mem::take(&mut pending);
        let (keyword, args) = whole
            .split_once(char::is_whitespace)
            .unwrap_or((&whole, ""));
        let instruction = Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_string(),
        };
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction.args.split_whitespace().collect();
            let name = match words.as_slice() {
                [.., as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            stages.push(Stage {
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(instruction);
        }
    }
    ensure!(
        pending.is_empty(),
        "Dockerfile: ends inside a continued line"
    );
    ensure!(stages.len() > 1, "Dockerfile: no FROM");
    Ok(stages)
}

/// A `COPY`: its `--from` stage if any, its sources and its destination.
#[derive(Debug)]
struct CopyArgs {
    from: Option<String>,
    sources: Vec<String>,
    dest: String,
}

/// Parses the arguments of a `COPY` (shell form or JSON form).
fn parse_copy(args: &str) -> anyhow::Result<CopyArgs> {
    let mut from = None;
    let mut rest = Vec::new();
    let mut words = args.split_whitespace().peekable();
    while let Some(flag) = words.next_if(|w| w.starts_with("--")) {
        if let Some(stage) = flag.strip_prefix("--from=") {
            from = Some(stage.to_string());
        }
    }
    let tail: Vec<&str> = words.collect();
    let tail = tail.join(" ");
    if tail.starts_with('[') {
        rest = serde_json::from_str(&tail).with_context(|| format!("COPY {args}"))?;
    } else {
        rest.extend(tail.split_whitespace().map(str::to_string));
    }
    let Some(dest) = rest.pop() else {
        bail!("COPY {args}: no destination");
    };
    ensure!(!rest.is_empty(), "COPY {args}: no source");
    Ok(CopyArgs {
        from,
        sources: rest,
        dest,
    })
}

/// Whether `.dockerignore`'s `patterns` leave `path` (relative to the build context) out of the
/// build context: the last pattern that matches it or one of its parent directories decides,
/// `!pattern` putting it back. `*` and `?` match within a path segment, `**` any segments.
fn dockerignored(patterns: &[&str], path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut ignored = false;
    for pattern in patterns {
        let (keep, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, *pattern),
        };
        let parts: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        if (1..=segments.len()).any(|n| glob_segments(&parts, &segments[..n])) {
            ignored = !keep;
        }
    }
    ignored
}

/// Whether the pattern's segments match the path's, `**` standing for any number of segments.
fn glob_segments(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            glob_segments(&pattern[1..], path)
                || (!path.is_empty() && glob_segments(pattern, &path[1..]))
        }
        (Some(p), Some(s)) => {
            glob(p.as_bytes(), s.as_bytes()) && glob_segments(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

/// Whether one path segment matches a pattern of literal bytes, `*` and `?`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) => p == t && glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

#[test]
fn every_deployment_yaml_file_parses() -> anyhow::Result<()> {
    let files = yaml_files()?;
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    for expected in [
        "compose.yaml",
        "deploy/kustomization.yaml",
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/service.yaml",
        "deploy/kubernetes/pdb.yaml",
        "deploy/kubernetes/secret.example.yaml",
    ] {
        ensure!(
            names.contains(&expected),
            "{expected} missing; found {names:?}"
        );
    }
    for (name, object) in k8s_objects()? {
        ensure!(
            object["apiVersion"].as_str().is_some()
                && object["metadata"]["name"].as_str().is_some(),
            "{name}: a Kubernetes object needs apiVersion and metadata.name"
        );
    }
    Ok(())
}

#[test]
fn compose_runs_two_gateways_and_postgres_behind_one_load_balancer() -> anyhow::Result<()> {
    let compose = yaml_files()?
        .into_iter()
        .find(|(name, _)| name == "compose.yaml")
        .and_then(|(_, mut docs)| docs.pop())
        .context("compose.yaml")?;
    let services = compose["services"]
        .as_hash()
        .context("compose.yaml: no services")?;
    let agents = fleet_agents()?;
    let port = listen_port(&agents)?;
    let drain = drain_seconds(&agents) + SHUTDOWN_GRACE.as_secs();

    // The gateways: services built from this repository's Dockerfile.
    let gateways: Vec<(&str, &Yaml)> = services
        .iter()
        .filter(|(_, s)| s["build"].as_str() == Some("."))
        .filter_map(|(name, s)| Some((name.as_str()?, s)))
        .collect();
    ensure!(
        gateways.len() >= 2,
        "compose.yaml: {} gateway services (built from .), a fleet needs two",
        gateways.len()
    );
    let (postgres, _) = services
        .iter()
        .find(|(_, s)| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("postgres:"))
        })
        .context("compose.yaml: no postgres service")?;
    let postgres = postgres.as_str().context("service name")?;
    ensure!(
        services[&Yaml::String(postgres.into())]["healthcheck"]["test"]
            .as_vec()
            .is_some(),
        "compose.yaml: {postgres} has no healthcheck for the gateways to wait on"
    );
    let mut hostnames = Vec::new();
    for (name, gateway) in &gateways {
        ensure!(
            gateway["depends_on"][postgres]["condition"].as_str() == Some("service_healthy"),
            "compose.yaml: {name} should wait for {postgres} to be healthy"
        );
        let url = gateway["environment"]["DATABASE_URL"]
            .as_str()
            .unwrap_or("");
        ensure!(
            url.starts_with("postgres://") && url.contains(&format!("@{postgres}:")),
            "compose.yaml: {name}'s DATABASE_URL {url:?} should reach {postgres}"
        );
        ensure!(
            gateway["ports"].is_badvalue(),
            "compose.yaml: {name} publishes ports; Twilio must reach the load balancer only"
        );
        let grace = gateway["stop_grace_period"]
            .as_str()
            .and_then(compose_seconds)
            .with_context(|| format!("compose.yaml: {name} has no stop_grace_period"))?;
        ensure!(
            grace > drain,
            "compose.yaml: {name}'s stop_grace_period {grace} s should exceed the drain and \
             the shutdown grace ({drain} s)"
        );
        let config_mount = gateway["volumes"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(Yaml::as_str)
            .find(|v| v.split(':').nth(1) == Some(CONFIG_DIR));
        ensure!(
            config_mount.is_some(),
            "compose.yaml: {name} should mount a directory at {CONFIG_DIR} (a file mount \
             never sees an editor's save)"
        );
        hostnames.push(gateway["hostname"].as_str().unwrap_or(name).to_string());
    }
    let mut unique = hostnames.clone();
    unique.sort();
    unique.dedup();
    ensure!(
        unique.len() == hostnames.len(),
        "compose.yaml: gateways share a hostname (their instance names): {hostnames:?}"
    );

    // The load balancer: the one service with published ports, balancing over every gateway.
    let published: Vec<&str> = services
        .iter()
        .filter(|(_, s)| s["ports"].as_vec().is_some())
        .filter_map(|(name, _)| name.as_str())
        .collect();
    ensure!(
        published.len() == 1,
        "compose.yaml: expected one service with ports (the load balancer), found {published:?}"
    );
    let caddyfile = read("deploy/Caddyfile")?;
    for (name, _) in &gateways {
        ensure!(
            caddyfile.contains(&format!("{name}:{port}")),
            "deploy/Caddyfile does not balance over {name}:{port}"
        );
    }
    ensure!(
        caddyfile.contains("health_uri /readyz"),
        "deploy/Caddyfile: no active health check on /readyz, so a draining gateway keeps \
         getting calls"
    );
    Ok(())
}

#[test]
fn the_deployment_probes_readiness_and_health_on_the_container_port() -> anyhow::Result<()> {
    let deployment = one_of_kind("Deployment")?;
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    ensure!(
        replicas >= 2,
        "Deployment: {replicas} replicas; a fleet needs two"
    );
    let container = gateway_container(&deployment)?;
    let port = listen_port(&fleet_agents()?)?;
    let ports: Vec<i64> = container["ports"]
        .as_vec()
        .into_iter()
        .flatten()
        .filter_map(|p| p["containerPort"].as_i64())
        .collect();
    ensure!(
        ports.contains(&port),
        "Deployment: container ports {ports:?} leave out the gateway's {port}"
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        ensure!(
            get["path"].as_str() == Some(path),
            "Deployment: {probe} should GET {path}, not {:?}",
            get["path"]
        );
        ensure!(
            resolve_port(container, &get["port"]) == Some(port),
            "Deployment: {probe} should probe port {port}, not {:?}",
            get["port"]
        );
    }
    let security = &container["securityContext"];
    ensure!(
        security["readOnlyRootFilesystem"].as_bool() == Some(true)
            && security["allowPrivilegeEscalation"].as_bool() == Some(false),
        "Deployment: the container should have a read-only root and no privilege escalation"
    );
    ensure!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"].as_bool()
            == Some(true),
        "Deployment: the pod should run as non-root"
    );
    Ok(())
}

#[test]
fn pods_outlast_the_prestop_sleep_and_the_drain() -> anyhow::Result<()> {
    let deployment = one_of_kind("Deployment")?;
    let container = gateway_container(&deployment)?;
    let command: Vec<&str> = container["lifecycle"]["preStop"]["exec"]["command"]
        .as_vec()
        .context("Deployment: no preStop exec command")?
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let sleep: u64 = match command.as_slice() {
        ["sleep", seconds] => seconds.parse().context("preStop sleep seconds")?,
        other => bail!("Deployment: preStop should be a sleep, is {other:?}"),
    };
    ensure!(
        sleep > 0,
        "Deployment: a preStop sleep of 0 lets SIGTERM arrive while load balancers still send"
    );
    let drain = drain_seconds(&fleet_agents()?);
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .and_then(|n| u64::try_from(n).ok())
        .context(
            "Deployment: no terminationGracePeriodSeconds (the default 30 s cuts the drain)",
        )?;
    let needed = sleep + drain + SHUTDOWN_GRACE.as_secs();
    ensure!(
        grace > needed,
        "Deployment: terminationGracePeriodSeconds {grace} should exceed the preStop sleep \
         ({sleep} s) + drain_seconds ({drain} s) + the shutdown grace ({} s) = {needed} s",
        SHUTDOWN_GRACE.as_secs()
    );
    Ok(())
}

#[test]
fn the_agents_file_is_mounted_as_a_directory_from_a_configmap() -> anyhow::Result<()> {
    let deployment = one_of_kind("Deployment")?;
    let container = gateway_container(&deployment)?;
    let args: Vec<&str> = container["args"]
        .as_vec()
        .into_iter()
        .flatten()
        .filter_map(Yaml::as_str)
        .collect();
    let config = format!("{CONFIG_DIR}/agents.toml");
    ensure!(
        args.windows(2).any(|w| w == ["--config", config.as_str()]),
        "Deployment: the gateway should serve --config {config}, args {args:?}"
    );
    let mount = container["volumeMounts"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"].as_str() == Some(CONFIG_DIR))
        .with_context(|| format!("Deployment: nothing mounted at {CONFIG_DIR}"))?;
    ensure!(
        mount["subPath"].is_badvalue(),
        "Deployment: {CONFIG_DIR} is mounted with subPath, which never sees a ConfigMap edit"
    );
    let volume_name = mount["name"].as_str().context("volumeMount name")?;
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|v| v["name"].as_str() == Some(volume_name))
        .with_context(|| format!("Deployment: no volume {volume_name}"))?;
    let configmap = volume["configMap"]["name"]
        .as_str()
        .with_context(|| format!("Deployment: volume {volume_name} is not a ConfigMap"))?;

    // The ConfigMap is generated from deploy/agents.toml, in place (no content hash in its name).
    let kustomization = kustomization()?;
    let generator = kustomization["configMapGenerator"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|g| g["name"].as_str() == Some(configmap))
        .with_context(|| format!("deploy/kustomization.yaml generates no ConfigMap {configmap}"))?;
    let files: Vec<&str> = generator["files"]
        .as_vec()
        .into_iter()
        .flatten()
        .filter_map(Yaml::as_str)
        .collect();
    ensure!(
        files == ["agents.toml"],
        "deploy/kustomization.yaml: {configmap} should hold deploy/agents.toml, holds {files:?}"
    );
    ensure!(
        kustomization["generatorOptions"]["disableNameSuffixHash"].as_bool() == Some(true),
        "deploy/kustomization.yaml: a hashed ConfigMap name rolls the pods on every edit \
         instead of updating the mounted file"
    );
    for resource in kustomization["resources"].as_vec().into_iter().flatten() {
        let resource = resource.as_str().context("resource")?;
        ensure!(
            workspace_root().join("deploy").join(resource).is_file(),
            "deploy/kustomization.yaml: resource {resource} does not exist"
        );
        ensure!(
            !resource.contains(".example."),
            "deploy/kustomization.yaml: applying the template {resource} would overwrite real \
             values with placeholders"
        );
    }
    Ok(())
}

#[test]
fn a_disruption_budget_a_service_and_scrape_annotations_cover_the_gateways() -> anyhow::Result<()> {
    let deployment = one_of_kind("Deployment")?;
    let container = gateway_container(&deployment)?;
    let pod = &deployment["spec"]["template"];
    let labels = pod["metadata"]["labels"]
        .as_hash()
        .context("Deployment: pod labels")?;
    let selects_pods = |selector: &Yaml| {
        selector
            .as_hash()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
    };
    let pdb = one_of_kind("PodDisruptionBudget")?;
    ensure!(
        selects_pods(&pdb["spec"]["selector"]["matchLabels"]),
        "PodDisruptionBudget: its selector does not pick the gateways' pods"
    );
    ensure!(
        pdb["spec"]["minAvailable"].as_i64().is_some_and(|n| n >= 1)
            || pdb["spec"]["maxUnavailable"].as_i64() == Some(1),
        "PodDisruptionBudget: should keep a gateway up"
    );
    let service = one_of_kind("Service")?;
    ensure!(
        selects_pods(&service["spec"]["selector"]),
        "Service: its selector does not pick the gateways' pods"
    );
    let port = listen_port(&fleet_agents()?)?;
    let service_ports = service["spec"]["ports"]
        .as_vec()
        .context("Service: no ports")?;
    ensure!(
        service_ports
            .iter()
            .all(|p| resolve_port(container, &p["targetPort"]) == Some(port)),
        "Service: every targetPort should be the gateway's {port}"
    );
    let annotations = &pod["metadata"]["annotations"];
    for (key, want) in [
        ("prometheus.io/scrape", "true".to_string()),
        ("prometheus.io/port", port.to_string()),
        ("prometheus.io/path", "/metrics".to_string()),
    ] {
        ensure!(
            annotations[key].as_str() == Some(want.as_str()),
            "Deployment: pod annotation {key} should be {want:?}, is {:?}",
            annotations[key]
        );
    }

    // Twilio reaches the Ingress: the public URL every gateway builds its TwiML and checks
    // signatures against is the Ingress's host, over TLS.
    let public_url = container["env"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|e| e["name"].as_str() == Some("SWITCHBOARD_PUBLIC_URL"))
        .and_then(|e| e["value"].as_str())
        .context("Deployment: no SWITCHBOARD_PUBLIC_URL")?;
    let host = public_url
        .strip_prefix("https://")
        .with_context(|| format!("SWITCHBOARD_PUBLIC_URL {public_url}: Twilio needs https"))?;
    let ingress = one_of_kind("Ingress")?;
    let tls_hosts: Vec<&str> = ingress["spec"]["tls"]
        .as_vec()
        .into_iter()
        .flatten()
        .flat_map(|t| t["hosts"].as_vec().into_iter().flatten())
        .filter_map(Yaml::as_str)
        .collect();
    ensure!(
        tls_hosts.contains(&host),
        "Ingress: TLS hosts {tls_hosts:?} should include the public URL's {host}"
    );
    Ok(())
}

#[test]
fn the_image_runs_a_stripped_binary_as_a_non_root_user() -> anyhow::Result<()> {
    let stages = dockerfile()?;
    let last = stages.last().context("no stage")?;
    let stage = |name: &str| stages.iter().find(|s| s.name.as_deref() == Some(name));

    let user = last
        .all("USER")
        .last()
        .context("Dockerfile: the final stage sets no USER")?;
    let uid = user.split(':').next().unwrap_or(user);
    ensure!(
        !matches!(uid, "root" | "0"),
        "Dockerfile: the final stage runs as {user}"
    );
    ensure!(
        last.all("ENTRYPOINT").any(|e| e.contains(BINARY)),
        "Dockerfile: the entrypoint should be {BINARY}"
    );
    ensure!(
        last.all("STOPSIGNAL").any(|s| s == "SIGTERM"),
        "Dockerfile: STOPSIGNAL SIGTERM (the gateway drains on it)"
    );
    let port = listen_port(&fleet_agents()?)?;
    ensure!(
        last.all("EXPOSE")
            .any(|e| e.split_whitespace().any(|p| p == port.to_string())),
        "Dockerfile: EXPOSE {port}"
    );
    ensure!(
        last.all("RUN").any(|r| r.contains("espeak-ng")),
        "Dockerfile: the runtime needs espeak-ng (the Piper voice's phonemizer)"
    );

    // The binary comes from a stage that split its debug info off and stripped it.
    let copies: Vec<CopyArgs> = last.all("COPY").map(parse_copy).collect::<Result<_, _>>()?;
    let binary = copies
        .iter()
        .find(|c| c.dest == BINARY)
        .with_context(|| format!("Dockerfile: the final stage copies nothing to {BINARY}"))?;
    let from = binary
        .from
        .as_deref()
        .context("the binary comes from a build stage")?;
    let built = &binary.sources[0];
    let build = stage(from).with_context(|| format!("Dockerfile: no stage {from}"))?;
    ensure!(
        build
            .all("RUN")
            .any(|r| r.contains("--only-keep-debug") && r.contains(built))
            && build.all("RUN").any(|r| {
                r.contains(built)
                    && ["--strip-debug", "--strip-all", "--strip-unneeded"]
                        .iter()
                        .any(|flag| r.contains(flag))
            }),
        "Dockerfile: stage {from} should split the debug info off {built} and strip it"
    );
    ensure!(
        copies
            .iter()
            .all(|c| c.sources.iter().all(|s| !s.ends_with(".debug"))),
        "Dockerfile: the runtime image should not carry the debug info"
    );
    let debug = stage("debug-info").context("Dockerfile: no debug-info stage")?;
    ensure!(
        debug
            .all("COPY")
            .filter_map(|c| parse_copy(c).ok())
            .any(|c| c.sources.iter().any(|s| *s == format!("{built}.debug"))),
        "Dockerfile: the debug-info stage should hold {built}.debug"
    );

    // The build toolchain is the workspace's rust-version.
    let manifest: toml::Table = read("Cargo.toml")?.parse()?;
    let rust_version = manifest["workspace"]["package"]["rust-version"]
        .as_str()
        .context("Cargo.toml: workspace rust-version")?;
    let pinned = stages[0]
        .all("ARG")
        .find_map(|a| a.strip_prefix("RUST_VERSION="))
        .context("Dockerfile: no global ARG RUST_VERSION")?;
    ensure!(
        pinned == rust_version || pinned.starts_with(&format!("{rust_version}.")),
        "Dockerfile: RUST_VERSION {pinned} is not the workspace's rust-version {rust_version}"
    );

    // The agents file the image serves, and every file it names, are in the image.
    let dests: Vec<&str> = copies.iter().map(|c| c.dest.as_str()).collect();
    let config = format!("{CONFIG_DIR}/agents.toml");
    ensure!(
        dests.contains(&config.as_str()),
        "Dockerfile: the image should carry {config}"
    );
    ensure!(
        last.all("CMD").any(|c| c.contains(&config)),
        "Dockerfile: CMD should serve {config}"
    );
    let agents = fleet_agents()?;
    for section in ["plugins", "lookups"] {
        for (name, path) in section_paths(&agents, section) {
            ensure!(
                dests
                    .iter()
                    .any(|d| path == *d || (d.ends_with('/') && path.starts_with(d))),
                "deploy/agents.toml: {section}.{name}.path {path:?} is not a file the image copies"
            );
        }
    }
    Ok(())
}

#[test]
fn every_path_the_image_copies_is_in_the_build_context() -> anyhow::Result<()> {
    let ignore = read(".dockerignore")?;
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for left_out in [
        "target",
        "models",
        ".git",
        "tests/fuzz/target",
        "switchboard-calls.db",
    ] {
        ensure!(
            dockerignored(&patterns, left_out),
            ".dockerignore should leave out {left_out}"
        );
    }
    let root = workspace_root();
    let mut copied = 0;
    for stage in dockerfile()? {
        for copy in stage.all("COPY").map(parse_copy) {
            let copy = copy?;
            if copy.from.is_some() {
                continue;
            }
            for source in &copy.sources {
                ensure!(
                    root.join(source).exists(),
                    "Dockerfile: COPY {source}: no such file in the repository"
                );
                ensure!(
                    !dockerignored(&patterns, source),
                    "Dockerfile: COPY {source}: .dockerignore leaves it out of the build context"
                );
                copied += 1;
            }
        }
    }
    ensure!(
        copied > 0,
        "Dockerfile: copies nothing from the build context"
    );
    Ok(())
}

#[test]
fn dockerignore_patterns_match_as_docker_matches_them() {
    let patterns = [
        "target",
        "**/*.db",
        "*.wav",
        "tests/fuzz",
        "docs",
        "!docs/keep.md",
    ];
    assert!(dockerignored(&patterns, "target"));
    assert!(dockerignored(&patterns, "target/release/switchboard"));
    assert!(dockerignored(&patterns, "a/b/calls.db"));
    assert!(dockerignored(&patterns, "heard.wav"));
    assert!(!dockerignored(
        &patterns,
        "tests/fixtures/speech/beckett.wav"
    ));
    assert!(dockerignored(&patterns, "tests/fuzz/corpus/x"));
    assert!(!dockerignored(&patterns, "tests/e2e"));
    assert!(!dockerignored(&patterns, "host/target-notes.md"));
    assert!(dockerignored(&patterns, "docs/deploy.md"));
    assert!(!dockerignored(&patterns, "docs/keep.md"));
}

#[test]
fn the_fleet_agents_file_is_valid_and_serves_the_shipped_agents() -> anyhow::Result<()> {
    let fleet = fleet_agents()?;
    let shipped: toml::Table = read("agents.toml")?.parse()?;

    // The same agents, tools and routing as the repository's agents.toml; the plugins and lookups
    // by the same names and files, at the image's paths.
    for key in ["agents", "tools", "routing"] {
        ensure!(
            fleet.get(key) == shipped.get(key),
            "deploy/agents.toml: [{key}] differs from agents.toml's"
        );
    }
    for section in ["plugins", "lookups"] {
        let files = |agents: &toml::Table| -> Vec<(String, Option<String>)> {
            section_paths(agents, section)
                .into_iter()
                .map(|(name, path)| {
                    let file = Path::new(&path).file_name();
                    (name, file.map(|f| f.to_string_lossy().into_owned()))
                })
                .collect()
        };
        ensure!(
            files(&fleet) == files(&shipped),
            "deploy/agents.toml: [{section}] names other files than agents.toml's"
        );
    }
    let records = fleet
        .get("records")
        .and_then(toml::Value::as_table)
        .context("deploy/agents.toml: no [records]")?;
    ensure!(
        records.get("url").and_then(toml::Value::as_str) == Some("${DATABASE_URL}")
            && !records.contains_key("path"),
        "deploy/agents.toml: a fleet's records are PostgreSQL at ${{DATABASE_URL}}"
    );

    // Valid as the gateway validates it, with the image's directories mapped to the repository's
    // (the plugins as empty files: validation checks they exist, loading comes later).
    let plugins_dir = temp_dir()?;
    let mut text = read("deploy/agents.toml")?;
    for (_, path) in section_paths(&fleet, "plugins") {
        let file = Path::new(&path).file_name().context("plugin file name")?;
        std::fs::write(plugins_dir.join(file), b"")?;
    }
    text = text
        .replace(
            "/opt/switchboard/plugins",
            &plugins_dir.display().to_string(),
        )
        .replace(
            "/opt/switchboard/assets",
            &workspace_root().join("host/assets").display().to_string(),
        );
    let path = plugins_dir.join("agents.toml");
    std::fs::write(&path, text)?;
    let source = config::load(&path)?;
    let env = |name: &str| match name {
        "DATABASE_URL" => Some("postgres://switchboard:secret@postgres:5432/switchboard".into()),
        "SWITCHBOARD_PUBLIC_URL" => Some("https://voice.example.com".into()),
        _ => None,
    };
    let validated = config::from_source(&source, &env);
    std::fs::remove_dir_all(&plugins_dir)?;
    if let Err(errors) = &validated {
        bail!("deploy/agents.toml is not a valid agents file:\n{errors}");
    }
    Ok(())
}
