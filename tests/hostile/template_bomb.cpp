// expect: COMPILE_ERROR
template <int N, int M> struct A { static const int v = A<N - 1, M + 1>::v + A<N - 1, M + 2>::v + A<N - 1, M + 3>::v; };
template <int M> struct A<0, M> { static const int v = M; };
int main() { return A<40, 0>::v; }
