"""The AWS-compatible endpoint: AWS JSON 1.1 and SigV4 in front of the gRPC servicer.

See ``server/gateway/DESIGN.md``. The gateway only translates: every operation runs
in the same servicer, through the same call hooks, as a gRPC call does.
"""
