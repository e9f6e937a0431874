/**
 * The deployment files: deploy/nginx.conf renders for N replicas with the settings streaming needs, and nginx
 * accepts it (`nginx -t`, skipped — saying so — when nginx is not installed; `deno task scale:test` runs the
 * whole two-replica recipe). The Dockerfile and the Kubernetes manifests name what the README says they do.
 */
import { ok as assert } from "node:assert";
import { fileURLToPath } from "node:url";
import { findNginx, NGINX_TEMPLATE, renderNginxConfig, writeNginxConfig } from "../tools/scale_test.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/+$/, "");
const nginx = await findNginx();
if (!nginx) {
  console.warn(
    "tests/deploy.test.ts: nginx is not installed: SKIPPING the `nginx -t` check of deploy/nginx.conf " +
      "(apt-get install -y nginx to run it)",
  );
}

Deno.test("deploy/nginx.conf renders one server line per replica, least_conn, passive checks, SSE", async () => {
  const template = await Deno.readTextFile(NGINX_TEMPLATE);
  const conf = renderNginxConfig(template, "127.0.0.1:8080", [
    "10.0.0.1:8000",
    "10.0.0.2:8000",
    "10.0.0.3:8000",
  ]);
  const live = conf.split("\n").filter((l) => !l.trimStart().startsWith("#")).join("\n");
  assert(!/\{\{\w+\}\}/.test(live), "a placeholder is left outside comments");
  const servers = live.match(/^\s*server \S+ max_fails=\d+ fail_timeout=\d+s;$/gm) ?? [];
  assert(servers.length === 3, `expected 3 server lines, got ${servers.length}`);
  for (
    const want of ["least_conn;", "listen 127.0.0.1:8080;", "proxy_buffering off;", "proxy_http_version 1.1;"]
  ) {
    assert(live.includes(want), `rendered config lacks ${want}`);
  }
  const read = /proxy_read_timeout (\d+)s;/.exec(live);
  assert(read && Number(read[1]) >= 600, "proxy_read_timeout must outlast the server's --request-timeout");
  let threw = false;
  try {
    renderNginxConfig(template, "8080", []);
  } catch {
    threw = true;
  }
  assert(threw, "no replicas must be an error");
});

Deno.test({
  name: "deploy/nginx.conf: nginx -t accepts the rendered config",
  ignore: !nginx,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "lethe-nginx-t-" });
    try {
      const conf = await writeNginxConfig(dir, "127.0.0.1:18080", ["127.0.0.1:18001", "127.0.0.1:18002"]);
      const out = await new Deno.Command(nginx!, { args: ["-p", dir, "-c", conf, "-t"], stderr: "piped" })
        .output();
      const err = new TextDecoder().decode(out.stderr);
      assert(out.success, `nginx -t failed:\n${err}`);
      assert(/test is successful/.test(err), err);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("Dockerfile and deploy/k8s name the image's command, health checks and the queue metric", async () => {
  const docker = await Deno.readTextFile(`${ROOT}/Dockerfile`);
  for (
    const want of [
      "FROM debian:12",
      "mesa-vulkan-drivers",
      "deno@2.9.6",
      "deno cache",
      "HEALTHCHECK",
      "USER ",
    ]
  ) {
    assert(docker.includes(want), `Dockerfile lacks ${want}`);
  }
  assert(/CMD \[.*"serve", "--host", "0\.0\.0\.0", "--port", "8000", "--model", "\/models\//.test(docker));
  const dep = await Deno.readTextFile(`${ROOT}/deploy/k8s/deployment.yaml`);
  for (
    const want of ["kind: Deployment", "readinessProbe:", "livenessProbe:", "path: /health", "resources:"]
  ) {
    assert(dep.includes(want), `deployment.yaml lacks ${want}`);
  }
  assert((await Deno.readTextFile(`${ROOT}/deploy/k8s/service.yaml`)).includes("kind: Service"));
  const hpa = await Deno.readTextFile(`${ROOT}/deploy/k8s/hpa.yaml`);
  assert(hpa.includes("kind: HorizontalPodAutoscaler") && hpa.includes("name: lethe_queued_sequences"));
  const adapter = await Deno.readTextFile(`${ROOT}/deploy/k8s/prometheus-adapter.yaml`);
  assert(adapter.includes("kind: ConfigMap") && adapter.includes("lethe_queued_sequences"));
});
