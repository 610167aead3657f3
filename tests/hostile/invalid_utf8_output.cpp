// expect: OK
#include <cstdio>
int main() { const unsigned char b[] = {0xff, 0xfe, 0x80, 0x00, 0xc3, 0x28, '\n'}; fwrite(b, 1, sizeof b, stdout); fwrite(b, 1, sizeof b, stderr); }
