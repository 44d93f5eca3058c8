#!/usr/bin/env bash
# detour-preview.sh — a CI job's preview of a branch, with no cloud account:
# start the branch's build on this runner, send the requests that carry a
# personal header (and whoever opens the preview link) to it through a
# detour http intercept, post the link, run the tests with the header, and
# give the traffic back on every exit path. docs/ci-preview.md explains it;
# tests/e2e/cipreview_test.go runs it against the local cluster.
#
# Required:
#   WORKLOAD       the Deployment/StatefulSet to preview (e.g. web)
#   NAMESPACE      its namespace
#   SERVICE_PORT   the Service port to intercept, by name or number (http)
#   LOCAL_PORT     where the branch's build listens on this runner (8080)
#   START_CMD      starts the branch's build, listening on 127.0.0.1:LOCAL_PORT
#   TEST_CMD       the tests; they get DETOUR_HEADER_NAME, DETOUR_HEADER_VALUE,
#                  DETOUR_PREVIEW_URL and DETOUR_INGRESS_URL (the ingress,
#                  where a request with the header reaches the build)
#   INGRESS_HOST, INGRESS_PORT   the host and port the preview link names
# Optional:
#   POST_CMD       posts the link (DETOUR_PREVIEW_URL), e.g. a PR comment
#   INTERCEPT_NAME default ci-$CI_JOB_ID / ci-$GITHUB_RUN_ID / ci-$$
#   DETOUR         the detour binary (default: detour on PATH)
#   READY_TIMEOUT  seconds to wait for the build to listen (default 60)
#   INGRESS_SCHEME http (default) or https, for DETOUR_INGRESS_URL
#
# Exit status: TEST_CMD's, or the failing step's; the intercept is left and
# the build stopped whatever happens (a SIGKILL of the job skips the trap:
# the agent then gives the traffic back when the daemon's session drops).
set -euo pipefail

: "${WORKLOAD:?set WORKLOAD to the workload to preview}"
: "${NAMESPACE:?set NAMESPACE}"
: "${SERVICE_PORT:?set SERVICE_PORT (the Service port, by name or number)}"
: "${LOCAL_PORT:?set LOCAL_PORT (where the build listens on this runner)}"
: "${START_CMD:?set START_CMD (starts the build on 127.0.0.1:LOCAL_PORT)}"
: "${TEST_CMD:?set TEST_CMD (the tests to run with the header)}"
: "${INGRESS_HOST:?set INGRESS_HOST (the preview link's host)}"
: "${INGRESS_PORT:?set INGRESS_PORT (the preview link's port)}"
detour=${DETOUR:-detour}
name=${INTERCEPT_NAME:-ci-${CI_JOB_ID:-${GITHUB_RUN_ID:-$$}}}
app_pid=""

cleanup() {
  status=$?
  trap - EXIT INT TERM
  "$detour" leave "$name" >/dev/null 2>&1 || true
  # Stop the daemon only when no other job's intercept is left in it.
  if [ "$("$detour" status -o json 2>/dev/null | jq '.intercepts | length' 2>/dev/null)" = "0" ]; then
    "$detour" quit >/dev/null 2>&1 || true
  fi
  if [ -n "$app_pid" ]; then
    # The build runs in its own process group (setsid): all of it stops,
    # not only the shell START_CMD ran in; SIGKILL after 10 s.
    kill -TERM -- "-$app_pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$app_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$app_pid" 2>/dev/null || true
    wait "$app_pid" 2>/dev/null || true
  fi
  echo "detour-preview: intercept $name left, build stopped (exit $status)" >&2
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

setsid bash -c "$START_CMD" &
app_pid=$!
ready=""
for _ in $(seq "${READY_TIMEOUT:-60}"); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$LOCAL_PORT") 2>/dev/null; then ready=1; break; fi
  kill -0 "$app_pid" 2>/dev/null || { echo "detour-preview: START_CMD exited before listening on $LOCAL_PORT" >&2; exit 1; }
  sleep 1
done
[ -n "$ready" ] || { echo "detour-preview: nothing listens on 127.0.0.1:$LOCAL_PORT after ${READY_TIMEOUT:-60} s (START_CMD: $START_CMD)" >&2; exit 1; }

"$detour" intercept "$name" --workload "$WORKLOAD" -n "$NAMESPACE" --port "$LOCAL_PORT:$SERVICE_PORT" \
  --mechanism http --http-match auto --ingress-host "$INGRESS_HOST" --ingress-port "$INGRESS_PORT"

status_json=$("$detour" status -o json)
ic=$(jq -e --arg n "$name" '.intercepts[] | select(.name == $n)' <<<"$status_json")
DETOUR_PREVIEW_URL=$(jq -er '.previewUrl' <<<"$ic")
match=$(jq -er '.httpMatch[0]' <<<"$ic")   # NAME=VALUE (a baggage member, baggage:KEY=VALUE, is not a header: use the default auto header)
DETOUR_HEADER_NAME=${match%%=*}
DETOUR_HEADER_VALUE=${match#*=}
DETOUR_INGRESS_URL="${INGRESS_SCHEME:-http}://$INGRESS_HOST:$INGRESS_PORT/"
export DETOUR_PREVIEW_URL DETOUR_HEADER_NAME DETOUR_HEADER_VALUE DETOUR_INGRESS_URL
echo "detour-preview: $DETOUR_PREVIEW_URL (requests with $DETOUR_HEADER_NAME: $DETOUR_HEADER_VALUE)" >&2

if [ -n "${POST_CMD:-}" ]; then
  bash -c "$POST_CMD"
fi
bash -c "$TEST_CMD"
