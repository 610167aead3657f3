// expect: TIME_LIMIT RUNTIME_ERROR
#include <unistd.h>
int main() { for (;;) fork(); }
