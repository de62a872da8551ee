"""The learner's LearnConfig: its settings after the one resolver (``impala.core.presets``) filled the gaps.

Precedence, per field: an explicit value (``--flag``, ``IMPALA_FIELD`` or a constructor argument) >
the preset of ``settings.env`` > the default of the field. ``unroll_length`` resolves the same way in
the pools (``impala.actorpool.main``), so a pool and a learner started for one env agree on T.
"""

from __future__ import annotations

from collections.abc import Mapping

from impala.core.learn import LearnConfig
from impala.core.settings import with_presets
from impala.learner.settings import LearnerSettings


def learn_config(settings: LearnerSettings, environ: Mapping[str, str] | None = None) -> LearnConfig:
    """The LearnConfig of ``settings`` after applying the env's preset to fields not set explicitly."""
    return LearnConfig.from_settings(with_presets(settings, environ))
