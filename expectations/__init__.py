"""Great Expectations suites built from consentgate policies."""
