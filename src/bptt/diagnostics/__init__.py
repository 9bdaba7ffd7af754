"""Diagnostics: measuring a gradient algorithm against another (gradient checking first), and
the flow of error signals through time (`flow`)."""

from .flow import Flow, flow
from .gradcheck import GradcheckResult, gradcheck, numeric_grad, relative_error
from .sweep import (
    Case,
    Problem,
    random_problem,
    run_case,
    standard_cases,
    variant_cases,
)
from .variance import EstimatorStats, estimator_stats

__all__ = [
    "Case",
    "EstimatorStats",
    "Flow",
    "GradcheckResult",
    "Problem",
    "estimator_stats",
    "flow",
    "gradcheck",
    "numeric_grad",
    "random_problem",
    "relative_error",
    "run_case",
    "standard_cases",
    "variant_cases",
]
