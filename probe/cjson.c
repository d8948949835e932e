#include <cjson/cJSON.h>
int main(void) { return cJSON_Parse("1") == 0; }
