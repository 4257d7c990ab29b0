#!/usr/bin/env bash
# `make run`: the receiver standalone on a routes file, with a loopback backend, and a signed
# sample callback sent through it once it is ready, so the first screen shows a callback routed.
# Then it keeps serving until Ctrl-C. Nothing here needs a cluster.
#   BIN     the callback-router binary         (default bin/callback-router)
#   ROUTES  CallbackApp, CallbackRoute, Secret and Namespace manifests (default examples/routes.yaml)
#   LISTEN  the receiver's address              (default :8080)
#   SPOOL   the spool directory                 (default under the OS temp dir)
#   BACKEND the echo backend's address          (default 127.0.0.1:9000, the examples' backend.url;
#                                                set BACKEND= to run without it)
set -euo pipefail
BIN="${BIN:-bin/callback-router}"
ROUTES="${ROUTES:-examples/routes.yaml}"
LISTEN="${LISTEN:-:8080}"
SPOOL="${SPOOL:-}"
BACKEND="${BACKEND-127.0.0.1:9000}"
port="${LISTEN##*:}"
url="http://127.0.0.1:${port}"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n "${BACKEND}" ]]; then
  echo "==> echo backend on ${BACKEND} (prints what it receives)"
  "${BIN}" echo-backend --listen "${BACKEND}" &
  pids+=($!)
fi

echo "==> receiver on ${LISTEN} with ${ROUTES}"
args=(receiver --routes "${ROUTES}" --listen "${LISTEN}")
[[ -n "${SPOOL}" ]] && args+=(--spool-dir "${SPOOL}")
"${BIN}" "${args[@]}" &
receiver=$!
pids+=("${receiver}")

ready() {
  if command -v curl >/dev/null; then curl -fsS "${url}/readyz" >/dev/null 2>&1
  else (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; fi
}
for _ in $(seq 1 100); do
  if ready; then break; fi
  kill -0 "${receiver}" 2>/dev/null || { echo "receiver exited" >&2; exit 1; }
  sleep 0.1
done

if [[ -n "${BACKEND}" && "${ROUTES}" == examples/routes.yaml ]]; then
  # --callback-app sends as the IM platform of that app: its appID, signed with its token.
  app=(--routes "${ROUTES}" --callback-app im-platform/chat-prod)
  echo "==> a signed Tencent IM \"before send\" callback (Sync: the backend's answer comes back)"
  "${BIN}" send --url "${url}" "${app[@]}" --command C2C.CallbackBeforeSendMsg || true
  echo "==> a signed \"after send\" callback (Async: acknowledged, spooled, delivered)"
  "${BIN}" send --url "${url}" "${app[@]}" --command C2C.CallbackAfterSendMsg || true
  echo "==> a forged one (wrong token)"
  "${BIN}" send --url "${url}" "${app[@]}" --token wrong-token --command C2C.CallbackAfterSendMsg || true
  echo "==> serving on ${url} (Ctrl-C stops); try: ${BIN} send --url ${url} ${app[*]} --command Push.OfflinePush"
fi
wait "${receiver}"
