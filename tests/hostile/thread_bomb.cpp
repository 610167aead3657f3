// expect: RUNTIME_ERROR TIME_LIMIT MEMORY_LIMIT
#include <thread>
#include <vector>
#include <chrono>
int main() {
  std::vector<std::thread> ts;
  for (;;) ts.emplace_back([] { std::this_thread::sleep_for(std::chrono::hours(1)); });
}
