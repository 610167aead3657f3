// expect: OUTPUT_LIMIT
#include <cstdio>
int main() { for (;;) fputs("flood flood flood flood flood flood flood flood\n", stderr); }
