// Stand-in for the Arduino API, so that deploy/arduino/actionloop_ttl can be compiled and run
// on the test machine (no board here): Serial reads stdin, digitalWrite prints "pin level".
#pragma once
#include <cstdint>
#include <cstdio>

const uint8_t LOW = 0;
const uint8_t HIGH = 1;
const uint8_t OUTPUT = 1;

void pinMode(uint8_t pin, uint8_t mode);
void digitalWrite(uint8_t pin, uint8_t level);

struct HostSerial {
  int pending = -2;  // -2: nothing read ahead yet
  void begin(unsigned long) {}
  int available() {
    if (pending == -2) pending = std::getchar();
    return pending == EOF ? 0 : 1;
  }
  int read() {
    if (available() == 0) return -1;
    int value = pending;
    pending = -2;
    return value;
  }
};

extern HostSerial Serial;
