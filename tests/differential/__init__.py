"""Differential tests: one scripted scenario, run on Python 3.11's asyncore and on ours.

See :mod:`tests.differential.harness` for how a scenario is written and compared.
"""
