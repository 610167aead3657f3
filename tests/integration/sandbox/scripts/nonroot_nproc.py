"""Run as a non-root user (tests/integration/sandbox/test_red_team.py): two bubblewrap workers under one host
uid, one job holding 15 processes while a job on the other worker forks 12. Prints one JSON line."""
import json, sys
from sandbox.config import SandboxConfig
from sandbox.pool import SandboxPool
from sandbox.types import Job, StageLimits
HOLD = """#include <unistd.h>
#include <sys/wait.h>
#include <cstdio>
int main(){int n=0; for(int i=0;i<15;i++){pid_t p=fork(); if(p==0){sleep(4);_exit(0);} if(p>0)n++;} printf("%d",n); while(wait(nullptr)>0){} }"""
FORK = """#include <unistd.h>
#include <sys/wait.h>
#include <cstdio>
int main(){usleep(1500000); int n=0; for(int i=0;i<12;i++){pid_t p=fork(); if(p==0){usleep(200000);_exit(0);} if(p>0)n++;} printf("%d",n); while(wait(nullptr)>0){} }"""
cfg = SandboxConfig(backend="bwrap", num_workers=2, dedupe=False, bwrap_cache_dir=sys.argv[1])
lim = StageLimits(cpu_s=2, wall_s=8, max_processes=16)
with SandboxPool(cfg) as pool:
    hold, fork = pool.run_batch([Job({"main.cpp": HOLD}, run_limits=lim), Job({"main.cpp": FORK}, run_limits=lim)])
    print(json.dumps({"hold": [hold.verdict.value, hold.tests[0].stdout if hold.tests else hold.to_json()],
                      "fork": [fork.verdict.value, fork.tests[0].stdout if fork.tests else fork.to_json()],
                      "restarts": pool.stats.worker_restarts}))
