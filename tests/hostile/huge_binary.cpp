// expect: COMPILE_ERROR
// 1 GiB of initialised data: the linker must hit the file-size limit instead of filling the disk.
char big[1 << 30] = {1};
int main(int argc, char**) { return big[argc * 4096]; }
