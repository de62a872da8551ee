"""``impala local --prometheus``: a real Prometheus beside the local stack, with the chart's alert rules.

Every service is a static target on loopback carrying the labels the chart's ServiceMonitors give
it in a cluster (``namespace``, ``pod``, ``component``; the namespace is the run's name), so the
dashboards' queries and the alert rules read the same series as in a cluster. The rules are
``helm/impala/files/alerts.yaml`` scoped to that namespace exactly as the chart's PrometheusRule
template scopes them (``scope_rules``).

Prometheus starts with the scrape configuration only and the rules are loaded (``arm``) once every
target has been scraped: evaluated before the first scrape, an absence rule would see a healthy
service as missing. The data lives in ``runs/<name>/prometheus/`` and is kept with the run.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from impala.core.redis_server import free_port
from impala.local.plan import HOST, Plan

# The chart's rule file, in a source checkout (the rules are not installed with the package).
ALERTS = Path(__file__).resolve().parents[3] / "helm" / "impala" / "files" / "alerts.yaml"
DEFAULT_INTERVAL_S = 5.0
# absent(metric{...}) and absent_over_time(metric{...}[...]): the selectors the chart scopes.
_ABSENT = re.compile(r"(absent(?:_over_time)?\(\s*[a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def prometheus_problem() -> str | None:
    """Why ``--prometheus`` cannot work here, or None when it can."""
    if shutil.which("prometheus") is None:
        return "--prometheus needs the prometheus binary on PATH (Debian/Ubuntu: apt-get install prometheus)"
    if not ALERTS.is_file():
        return f"--prometheus needs the chart's alert rules at {ALERTS} (run from a source checkout)"
    return None


def scope_rules(text: str, namespace: str) -> dict[str, Any]:
    """The rule file with every ``absent()`` selector limited to ``namespace``: absent() returns no
    labels of its own, so an unscoped one could not say which release lost its series (nor notice
    one release among many). templates/monitoring/prometheusrule.yaml does the same substitution."""
    doc: dict[str, Any] = yaml.safe_load(text)
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["expr"] = _ABSENT.sub(rf'\1{{namespace="{namespace}",', rule["expr"])
    return doc


def metrics_urls(plan: Plan) -> dict[str, str]:
    """Service name -> its ``/metrics`` URL (the ``metrics`` key of ``endpoints.json``)."""
    urls = {
        "weights": f"http://{HOST}:{plan.weights.metrics_port}/metrics",
        "learner": f"http://{HOST}:{plan.learner.metrics_port}/metrics",
        "control": f"{plan.control_url}/metrics",
    }
    urls.update({f"actorpool-{i}": f"http://{HOST}:{pool.metrics_port}/metrics" for i, pool in enumerate(plan.pools)})
    return urls


def scrape_config(
    namespace: str, urls: Mapping[str, str], control_token_file: Path, interval_s: float, rule_file: Path | None
) -> dict[str, Any]:
    """prometheus.yml: one job per component, each target labelled as the ServiceMonitors label it."""
    jobs: dict[str, list[dict[str, Any]]] = {}
    for name, url in urls.items():
        component = name.split("-")[0]
        address = url.removeprefix("http://").removesuffix("/metrics")
        labels = {"namespace": namespace, "pod": name, "component": component}
        jobs.setdefault(component, []).append({"targets": [address], "labels": labels})
    interval = f"{interval_s:g}s"
    scrapes = []
    for component, targets in jobs.items():
        job: dict[str, Any] = {"job_name": component, "static_configs": targets}
        if component == "control":  # its /metrics sits behind the control token
            job["authorization"] = {"type": "Bearer", "credentials_file": str(control_token_file.resolve())}
        scrapes.append(job)
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": scrapes,
    }
    if rule_file is not None:
        config["rule_files"] = [str(rule_file.resolve())]
    return config


@dataclass
class LocalPrometheus:
    """The files and command line of one Prometheus for one run of the local stack."""

    directory: Path
    namespace: str
    urls: dict[str, str]
    control_token_file: Path
    interval_s: float = DEFAULT_INTERVAL_S
    port: int = 0

    def __post_init__(self) -> None:
        self.port = self.port or free_port(HOST)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "rules.yaml").write_text(yaml.safe_dump(scope_rules(ALERTS.read_text(), self.namespace)))
        self.write_config(armed=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.directory / "prometheus.yml"

    def argv(self) -> list[str]:
        binary = shutil.which("prometheus") or "prometheus"
        return [
            binary,
            f"--config.file={self.config_file.resolve()}",
            f"--storage.tsdb.path={(self.directory / 'data').resolve()}",
            f"--web.listen-address={HOST}:{self.port}",
            "--web.enable-lifecycle",  # POST /-/reload arms the rules
            "--log.level=warn",
        ]

    def arm(self, timeout_s: float) -> bool:
        """Load the alert rules once every target has been scraped (or ``timeout_s`` passed);
        False when Prometheus did not take the new configuration."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.all_scraped():
            time.sleep(min(1.0, self.interval_s / 2))
        self.write_config(armed=True)
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{self.url}/-/reload", method="POST"), timeout=10):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def all_scraped(self) -> bool:
        """Every target has been scraped at least once (successfully or not)."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/targets?state=active", timeout=2) as response:
                targets = json.load(response)["data"]["activeTargets"]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return False
        return len(targets) == len(self.urls) and all(t.get("lastScrape", "").startswith("2") for t in targets)

    def write_config(self, *, armed: bool) -> None:
        rules = self.directory / "rules.yaml" if armed else None
        config = scrape_config(self.namespace, self.urls, self.control_token_file, self.interval_s, rules)
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
