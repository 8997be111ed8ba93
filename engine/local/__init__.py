"""The local engine: train on every core of one machine.

P processes, started with `spawn`, attach by name to the weight matrices in shared memory
and update them lock-free (Hogwild) through the nogil kernels. A LocalSession keeps those
processes and the shared weights up across calls: the parent hands out chunks from a task
source (each process holds at most two, so fast ones take more; with hot rows, a merge
interval's worth, since it reports chunks once merged), and survives a process that dies:
the chunks it held go to the others. LocalEngine.train is one session run over
a task list; with one process the same loop runs in-process, with no shared memory. The
cluster's nodes feed a session continuously (engine.cluster); this module knows nothing of
the network.
"""
