"""Generate the Grafana dashboards of the Helm chart (helm/impala/dashboards/*.json).

Dashboards are data here (rows of panels with their PromQL) and JSON is built with the typed
grafana-foundation-sdk builders, so mypy checks every builder argument. Edit this file, run
``python scripts/dashboards.py`` and commit the JSON; ``--check`` exits 1 when the committed JSON is
stale (tests/monitoring runs it). Every query selects ``namespace=~"$namespace"``: one release per namespace.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions, VizLegendOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueGraphMode, LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

OUT_DIR = Path(__file__).resolve().parents[1] / "helm" / "impala" / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"


def m(metric: str, labels: str = "") -> str:
    """Selector of the chosen namespace: m("x", 'a="b"') -> x{namespace=~"$namespace",a="b"}."""
    return f'{metric}{{namespace=~"$namespace"{"," + labels if labels else ""}}}'


def rate(metric: str, by: str = "", labels: str = "") -> str:
    """Per-second rate summed over pods (or by some labels)."""
    return f"sum{f' by ({by})' if by else ''} (rate({m(metric, labels)}[{RATE}]))"


def quantile(q: float, histogram: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({m(histogram + '_bucket')}[{RATE}])))"


def mean(histogram: str) -> str:
    return f"{rate(histogram + '_sum')} / {rate(histogram + '_count')}"


def p50_p99(histogram: str) -> tuple[tuple[str, str], ...]:
    return (quantile(0.5, histogram), "p50"), (quantile(0.99, histogram), "p99")


def latest(metric: str, agg: str = "max") -> str:
    return f"{agg}({m(metric)})"


@dataclass(frozen=True)
class Graph:
    """A time-series panel: (PromQL, legend) pairs."""

    title: str
    unit: str
    queries: tuple[tuple[str, str], ...]
    description: str = ""


@dataclass(frozen=True)
class Stat:
    """A single-number panel."""

    title: str
    unit: str
    expr: str
    description: str = ""


Rows = tuple[tuple[str, tuple[Graph | Stat, ...]], ...]

BUFFER_FILL = f"{latest('impala_buffer_depth_rollouts')} / {latest('impala_buffer_capacity_rollouts')}"
# Before its first checkpoint (the timestamp is absent) the learner's uptime: what a crash would lose.
LEARNER_START = (
    f"max(process_start_time_seconds and on (namespace, pod) {m('impala_learner_checkpoint_interval_seconds')})"
)
CHECKPOINT_AGE = f"time() - {latest('impala_learner_last_checkpoint_timestamp_seconds')} or time() - {LEARNER_START}"
CHECKPOINT_HELP = (
    "Seconds since the learner's last checkpoint (since its start before the first): what a crash would lose."
)
# Process metrics of impala's own pods (prometheus-client's process collector on every service).
SERVICES = 'component=~"actorpool|learner|weights|control"'
RETURN = Graph("Episode return", "short", ((latest("impala_learner_episode_return_mean"), "mean of last 100"),))
LAG = Graph(
    "Policy lag",
    "short",
    ((mean("impala_learner_policy_lag_versions"), "mean"), *p50_p99("impala_learner_policy_lag_versions")),
    "Weight versions between the policy that acted and the learner.",
)

OVERVIEW: Rows = (
    ("Run", (
        Stat("Env steps/s", "short", rate("impala_learner_env_steps_total")),
        Stat("Learner steps/s", "short", rate("impala_learner_steps_total")),
        Stat("Episode return (last 100)", "short", latest("impala_learner_episode_return_mean")),
        Stat("Env clients", "short", latest("impala_actorpool_connected_clients", "sum")),
        Stat("Buffer fill", "percentunit", BUFFER_FILL),
        Stat("Checkpoint age", "s", CHECKPOINT_AGE, CHECKPOINT_HELP),
    )),
    ("Learning", (
        RETURN,
        Graph("Env steps/s", "short", (
            (rate("impala_learner_env_steps_total"), "learned"),
            (rate("impala_actorpool_env_steps_total"), "acted"),
        ), "Acted = stepped by env clients; learned = consumed by the learner."),
        LAG,
        Graph("Policy version", "short", (
            (latest("impala_learner_policy_version"), "learner"),
            (latest("impala_actorpool_policy_version", "min"), "slowest pool"),
            (latest("impala_weights_version"), "weight service"),
        )),
    )),
    ("Rollouts", (
        Graph("Buffer depth", "short", (
            (latest("impala_buffer_depth_rollouts"), "depth"),
            (latest("impala_buffer_unread_rollouts"), "unread"),
            (latest("impala_buffer_capacity_rollouts"), "capacity"),
        ), "Read from Redis at each scrape. Depth - unread = read by the learner, not yet acknowledged."),
        Graph("Rollouts/s", "short", (
            (rate("impala_actorpool_rollouts_produced_total"), "produced"),
            (rate("impala_learner_rollouts_consumed_total"), "consumed"),
            (rate("impala_actorpool_rollouts_shed_total"), "shed"),
            (rate("impala_learner_rollouts_dropped_total"), "dropped"),
        ), "Produced = consumed + shed + dropped in steady state; nothing is lost silently."),
    )),
    ("Control", (
        Graph("Paused", "short", (
            (latest("impala_learner_paused"), "learner"),
            (latest("impala_actorpool_paused"), "pools"),
        )),
        Graph("Control API", "reqps", (
            (rate("impala_control_requests_total", "route, code", 'route!="/metrics"'), "{{route}} {{code}}"),
            (rate("impala_control_commands_total", "command"), "command {{command}}"),
        ), "Requests by route and status (Prometheus's own scrapes of /metrics left out), and commands."),
    )),
    ("Processes", (
        Graph("CPU", "percentunit", (
            (f"sum by (pod) (rate({m('process_cpu_seconds_total', SERVICES)}[{RATE}]))", "{{pod}}"),
        ), "CPU seconds per second of each impala process (1 = one core)."),
        Graph("Resident memory", "bytes", ((f"max by (pod) ({m('process_resident_memory_bytes', SERVICES)})", "{{pod}}"),)),
        Graph("Open file descriptors", "percentunit", (
            (f"max by (pod) ({m('process_open_fds', SERVICES)} / {m('process_max_fds', SERVICES)})", "{{pod}}"),
        ), "Fraction of the limit in use: at 1 a pool refuses connections."),
        Graph("Restarts (1h)", "short", (
            (f"sum by (component) (changes({m('process_start_time_seconds', SERVICES)}[1h]))", "{{component}}"),
        ), "Process starts in the last hour per component after the first: a container restarted in place."),
    )),
)  # fmt: skip

ACTORPOOL: Rows = (
    ("Clients", (
        Graph("Connected env clients", "short", ((f"sum by (pod) ({m('impala_actorpool_connected_clients')})", "{{pod}}"),)),
        Graph("Env steps/s", "short", ((rate("impala_actorpool_env_steps_total", "pod"), "{{pod}}"),)),
        Graph("Rejected streams/s", "short", (
            (rate("impala_actorpool_rejected_streams_total", "code, reason"), "{{code}} {{reason}}"),
        ), "Streams ended with an error status (auth, spec mismatch, malformed tensors, limits)."),
        Graph("Backpressure wait", "percentunit", (
            (rate("impala_actorpool_backpressure_wait_seconds_total", "pod"), "{{pod}}"),
        ), "Fraction of time replies were held because the buffer was full."),
    )),
    ("Inference", (
        Graph("Inference batch size", "short", p50_p99("impala_actorpool_inference_batch_size")),
        Graph("Inference latency", "s", p50_p99("impala_actorpool_inference_latency_seconds")),
        Graph("Action latency", "s", p50_p99("impala_actorpool_action_latency_seconds"),
              "From a Step received to its Actions sent: what an env client waits."),
        Graph("Policy version", "short", ((f"max by (pod) ({m('impala_actorpool_policy_version')})", "{{pod}}"),)),
    )),
    ("Rollouts and weights", (
        Graph("Rollouts produced/s", "short", (
            (rate("impala_actorpool_rollouts_produced_total", "partial"), "partial={{partial}}"),
            (rate("impala_actorpool_rollouts_shed_total"), "shed"),
        )),
        Graph("Weight updates/s", "short", (
            (rate("impala_actorpool_weight_updates_total"), "applied by pools"),
            (rate("impala_weights_sent_total"), "sent by weight service"),
            (rate("impala_weights_rejected_total", "reason"), "rejected {{reason}}"),
        )),
        Graph("Weight subscribers", "short", ((latest("impala_weights_subscribers"), "subscribers"),)),
        Graph("Weight data plane problems/s", "short", (
            (rate("impala_actorpool_weight_bulk_fallbacks_total", "reason"), "pool fell back: {{reason}}"),
            (rate("impala_weights_bulk_refused_total", "reason"), "service refused: {{reason}}"),
        ), "Bulk data-plane failures (ADR 0009). Lasting fallbacks or refusals other than gone: docs/operations.md."),
    )),
)  # fmt: skip

LEARNER: Rows = (
    ("Progress", (
        Graph("Updates and episodes/s", "short", (
            (rate("impala_learner_steps_total"), "updates"),
            (rate("impala_learner_episodes_total"), "episodes"),
        )),
        Graph("Loss", "short", ((f"max by (term) ({m('impala_learner_loss')})", "{{term}}"),)),
        RETURN,
        LAG,
        Graph("Gradient norm and learning rate", "short", (
            (latest("impala_learner_grad_norm"), "grad norm (before clipping)"),
            (latest("impala_learner_learning_rate"), "learning rate"),
        )),
    )),
    ("Time per update", (
        Graph("Batch wait", "s", p50_p99("impala_learner_batch_wait_seconds"),
              "Time the learner waited for a batch: high means the pools are the bottleneck."),
        Graph("Learn step", "s", p50_p99("impala_learner_learn_seconds")),
        Graph("Rollouts/s", "short", (
            (rate("impala_learner_rollouts_consumed_total"), "consumed"),
            (rate("impala_learner_rollouts_dropped_total", "reason"), "dropped {{reason}}"),
        )),
        Graph("Weight publish", "s", (
            (quantile(0.99, "impala_weights_publish_seconds"), "p99 seconds"),
            (rate("impala_weights_publish_total"), "publishes/s"),
        )),
    )),
    ("Health", (
        Graph("Heartbeat and checkpoint age", "s", (
            (f"time() - {latest('impala_learner_heartbeat_timestamp_seconds')}", "heartbeat"),
            (CHECKPOINT_AGE, "checkpoint"),
        )),
        Graph("Policy version", "short", (
            (latest("impala_learner_policy_version"), "learner"),
            (latest("impala_weights_version"), "weight service"),
        )),
        Graph("Weights size", "bytes", ((latest("impala_weights_bytes"), "bytes"),)),
        Graph("Paused", "short", ((latest("impala_learner_paused"), "paused"),)),
    )),
)  # fmt: skip

DASHBOARDS: dict[str, tuple[str, str, Rows]] = {
    "overview": ("impala / Overview", "One IMPALA run: throughput, learning, buffer and health.", OVERVIEW),
    "actorpool": ("impala / ActorPool", "The gRPC ingress: clients, inference batching, latency.", ACTORPOOL),
    "learner": ("impala / Learner", "The V-trace learner: updates, losses, lag, timing, checkpoints.", LEARNER),
}


def panel(spec: Graph | Stat, panel_id: int) -> timeseries.Panel | stat.Panel:
    """One panel builder from its spec."""
    if isinstance(spec, Stat):
        return (
            stat.Panel().id(panel_id).title(spec.title).description(spec.description).datasource(DATASOURCE)
            .unit(spec.unit).height(4).span(4).graph_mode(BigValueGraphMode.NONE)
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
            .with_target(prometheus.Dataquery().expr(spec.expr).instant().ref_id("A"))
        )  # fmt: skip
    legend = VizLegendOptions().display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM).show_legend(True)
    graph = (
        timeseries.Panel().id(panel_id).title(spec.title).description(spec.description).datasource(DATASOURCE)
        .unit(spec.unit).height(8).span(12).legend(legend)
    )  # fmt: skip
    for ref, (expr, legend_format) in zip("ABCDEFGH", spec.queries, strict=False):
        graph = graph.with_target(prometheus.Dataquery().expr(expr).legend_format(legend_format).ref_id(ref))
    return graph


def build(uid: str, title: str, description: str, rows: Rows) -> dashboard.Dashboard:
    """A dashboard with the datasource and namespace variables every impala dashboard shares."""
    board = (
        dashboard.Dashboard(title).uid(f"impala-{uid}").description(description).tags(["impala"])
        .refresh("30s").time("now-3h", "now").timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("namespace").label("Namespace").datasource(DATASOURCE)
            .query("label_values(impala_actorpool_connected_clients, namespace)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
    )  # fmt: skip
    next_id = 1
    for row_title, specs in rows:
        board = board.with_row(dashboard.Row(row_title).id(next_id))
        for offset, spec in enumerate(specs, start=1):
            board = board.with_panel(panel(spec, next_id + offset))
        next_id += len(specs) + 1
    return board


def render_all() -> dict[str, str]:
    """File name -> JSON text of every dashboard (stable: sorted keys, trailing newline)."""
    return {
        f"{uid}.json": json.dumps(build(uid, *spec).build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
        for uid, spec in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate helm/impala/dashboards/*.json.")
    parser.add_argument("--check", action="store_true", help="Exit 1 when the committed JSON differs.")
    args = parser.parse_args(argv)
    stale = []
    for file_name, text in render_all().items():
        path = OUT_DIR / file_name
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        elif not path.is_file() or path.read_text() != text:
            stale.append(str(path))
    if stale:
        sys.stderr.write("stale dashboards, run `python scripts/dashboards.py`: " + ", ".join(stale) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
