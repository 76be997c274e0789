"""The local cluster's node agent: a stand-in kubelet that runs pods as local processes.

It registers fake nodes (GPU and CPU), keeps them Ready, and runs every container of every pod
bound to them as a process of this machine, in a private mount namespace so volumes appear at
their real mountPaths. Images are never pulled: the process runs from the project's environment.
"""
