"""`optimkit compare`: which optimizer should I use? Measured, on the reference task or yours.

The package is `comparison` so that `optimkit.compare` can be the function."""

from optimkit.comparison.recipes import DEFAULT_OPTIMIZERS, RECIPES
from optimkit.comparison.report import markdown_table, write_reports
from optimkit.comparison.runner import RunResult, compare, run_optimizer
from optimkit.comparison.suite import SuiteResult, run_suite, run_tasks
from optimkit.comparison.suite_report import write_suite_reports
from optimkit.comparison.task import QUICK, TaskConfig, run_reference_task
from optimkit.comparison.verdicts import CLAIMS
