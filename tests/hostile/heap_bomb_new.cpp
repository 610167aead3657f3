// expect: MEMORY_LIMIT
#include <vector>
int main() { std::vector<char> v(1ULL << 36); return v[12345]; }
