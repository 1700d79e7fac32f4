"""The command line shared by the Python tests that start `embedserve` processes through
scripts/cluster/cluster.py (tests/e2e/multi_device_e2e_test.py,
tests/deploy/replicas_test.py): parses --binary, --stubs, --data and --cluster, and
imports grpc (Debian's python3-grpcio), cluster.py and the stubs protoc generated.
Exits with ctest's skip code 77 when grpc (or nginx, if needed) is missing."""
import argparse
import os
import sys


def setup(need_nginx=False):
    """Returns (args, unittest argv rest, grpc, cluster, embedding_pb2, embedding_pb2_grpc)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True, help="BUILD/tools/server/embedserve")
    parser.add_argument("--stubs", required=True, help="BUILD/tests/e2e/py")
    parser.add_argument("--data", required=True, help="tests/data")
    parser.add_argument("--cluster", required=True, help="scripts/cluster")
    args, rest = parser.parse_known_args()
    try:
        import grpc
    except ImportError:
        print("SKIPPED: /usr/bin/python3 has no grpc module (apt-get install python3-grpcio)")
        sys.exit(77)
    if need_nginx:
        os.environ["PATH"] += os.pathsep + "/usr/sbin"  # Debian's nginx, for root and not
        if not any(os.access(os.path.join(d, "nginx"), os.X_OK)
                   for d in os.environ["PATH"].split(os.pathsep)):
            print("SKIPPED: no nginx (scripts/setup.sh installs it)")
            sys.exit(77)
    sys.path.insert(0, args.stubs)
    sys.path.insert(0, args.cluster)
    import cluster
    from embedserve.v1 import embedding_pb2, embedding_pb2_grpc
    return args, [sys.argv[0]] + rest, grpc, cluster, embedding_pb2, embedding_pb2_grpc
