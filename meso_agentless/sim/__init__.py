"""`meso sim`: replay a workload trace through the real allocator, in simulated time.

trace (the CSV format), generate (synthetic traces), partition (static partitions),
events (the discrete-event engine around `meso_agentless.core.allocator.allocate`),
report (figures from a run), plot (matplotlib charts). Pure but for reading and writing files.
"""
