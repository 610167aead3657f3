// expect: TIME_LIMIT
#include <unistd.h>
int main() { for (;;) pause(); }
