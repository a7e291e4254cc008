"""Failure drills: break things on purpose, check nothing is lost or billed twice."""
