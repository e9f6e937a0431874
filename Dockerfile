# Lethe's OpenAI-compatible server in a container: Debian 12, Mesa's Vulkan drivers (lavapipe runs on the CPU;
# a GPU's Vulkan driver is used when the container is given the device), Deno 2.9.6, the bundled model.
#
#   docker build -t lethe:0.1.0 .
#   docker run --rm -p 8000:8000 lethe:0.1.0
#   docker run --rm -p 8000:8000 -v /srv/models/R1-Qwen-1.5B:/models/r1:ro lethe:0.1.0 \
#     deno task serve --host 0.0.0.0 --port 8000 --model /models/r1 --kv lethe --kv-budget 256
#
# Not built in the project's own environment (it has no Docker engine); see README "Running more than one
# replica".

# Deno from npm's `deno` package: its install script puts the native binary in the package directory.
FROM node:22-bookworm-slim AS deno
RUN npm install -g deno@2.9.6 \
 && cp "$(npm root -g)/deno/deno" /usr/local/bin/deno \
 && /usr/local/bin/deno --version

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends mesa-vulkan-drivers ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=deno /usr/local/bin/deno /usr/local/bin/deno

RUN useradd --create-home --uid 10001 lethe \
 && mkdir -p /app /models /deno-dir \
 && chown lethe:lethe /app /deno-dir
ENV DENO_DIR=/deno-dir \
    XDG_RUNTIME_DIR=/tmp \
    NO_COLOR=1

WORKDIR /app
COPY --chown=lethe:lethe . /app
# The default model, at the path the command names; mount another model directory over /models to serve it.
COPY --chown=lethe:lethe models/lethe-reasoner-tiny /models/lethe-reasoner-tiny

USER lethe
# Dependencies (deno.lock pins them) and the browser page (dist/web) are fetched and built now, so the
# container needs no network when it starts.
RUN deno cache --frozen src/server/main.ts tools/build_web.ts \
 && deno task build:web

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["deno", "eval", "const r = await fetch('http://127.0.0.1:8000/health'); Deno.exit(r.ok ? 0 : 1)"]
# SIGTERM drains: running requests finish, new ones get 503 (give `docker stop -t` enough time).
STOPSIGNAL SIGTERM
CMD ["deno", "task", "serve", "--host", "0.0.0.0", "--port", "8000", "--model", "/models/lethe-reasoner-tiny"]
