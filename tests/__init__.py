"""Tests of symbolic-backprop; a package so that the tests share ``tests.helpers``."""
