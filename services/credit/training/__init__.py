"""Offline training of the credit scorecard (numpy, scikit-learn, fairlearn): never imported by
the running service, which loads only the JSON artifact it writes."""
