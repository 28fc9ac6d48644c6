from lit_transfer.study.runner import main

if __name__ == "__main__":
    main()
