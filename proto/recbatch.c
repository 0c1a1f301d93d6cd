/* recbatch.c: being written */
