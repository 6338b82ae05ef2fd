"""Fault-injection suite: a history recorder, a checker over histories, a cluster of
brokers in network namespaces, and a nemesis that breaks it on a seeded schedule.
test_faults.py drives them; test_fault_checker.py proves the checker can fail."""
