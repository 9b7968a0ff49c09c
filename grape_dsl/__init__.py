"""GRAPE-DSL: the .grc keypoint-constraint language (see docs/language.md)."""

from grape_dsl.parser import parse as parse
from grape_dsl.fmt import format_module as format_module
from grape_dsl.fmt import format_source as format_source
from grape_dsl.api import CheckedTask as CheckedTask
from grape_dsl.api import check_file as check_file
from grape_dsl.api import check_source as check_source
from grape_dsl.api import load_task as load_task
from grape_dsl.compiler import compile_task as compile_task
