"""GRAPE-DSL: the .grc keypoint-constraint language (see docs/language.md)."""

from grape_dsl.parser import parse as parse
